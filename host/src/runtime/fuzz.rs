//! A randomized campaign over upload validation: any bytes a client uploads
//! as a plugin are compiled or refused with a [`PluginError`] (422 at the
//! API), never a panic. Inputs are arbitrary bytes behind a component header
//! and a real component with bytes changed, cut or inserted, so most cases
//! get past the header into the component and module parsers.
//!
//! The test suite runs proptest's default number of cases; `./dev.sh fuzz
//! [CASES]` runs a long campaign.

use super::{PluginError, Runtime, RuntimeConfig};
use proptest::prelude::*;
use std::sync::OnceLock;

/// A component of the `consumer` world whose code is a stub (never run).
pub(crate) fn stub_component() -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve
        .push_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/wit"))
        .expect("the plugin WIT parses")
        .0;
    let world = resolve
        .select_world(&[pkg], Some("consumer"))
        .expect("the world exists");
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embeds");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("a module")
        .validate(true)
        .encode()
        .expect("encodes")
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 2,
            ..RuntimeConfig::default()
        })
        .expect("a runtime")
    })
}

fn component() -> &'static [u8] {
    static COMPONENT: OnceLock<Vec<u8>> = OnceLock::new();
    COMPONENT.get_or_init(stub_component)
}

/// How a case changes the real component.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Edit::Set(at, b) => {
                if let Some(slot) = bytes.get_mut(at % len) {
                    *slot = *b;
                }
            }
            Edit::Insert(at, more) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, more.iter().copied());
            }
            Edit::Remove(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, more)| Edit::Insert(at, more)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Remove(at, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Whatever the outcome, it is an answer: compiled, or a refusal.
fn answered(result: Result<super::Plugin, PluginError>) {
    if let Err(e) = result {
        assert!(!e.to_string().is_empty(), "a refusal says why");
    }
}

proptest! {
    #[test]
    fn changed_components_are_compiled_or_refused(edits in proptest::collection::vec(edit(), 1..6)) {
        answered(runtime().compile(&apply(component().to_vec(), &edits)));
    }

    #[test]
    fn arbitrary_bytes_behind_a_component_header_are_refused(
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        bytes.extend(body);
        prop_assert!(runtime().compile(&bytes).is_err());
    }
}

#[test]
fn the_unchanged_component_compiles() {
    runtime()
        .compile(component())
        .expect("the stub component compiles");
}
