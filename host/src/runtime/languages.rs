//! What a component was written in, as far as its bytes tell: the
//! `language` fields of its `producers` sections (the tool-conventions
//! metadata compilers write), and the Python runtime a componentize-py
//! component links.
//!
//! A component carries the languages of everything linked into it — the
//! C library under Rust, the Rust adapter beside C, the C++ engine under
//! JavaScript — so the guest's own are told apart in this order:
//! 1. Python, if a core module links `libpython*` (componentize-py writes
//!    no `language` for it), and any language the outer component names
//!    (ComponentizeJS names JavaScript there);
//! 2. else the languages of the core modules built with `wit-bindgen` (the
//!    module that holds the guest's own bindings);
//! 3. else every language named anywhere.

use wasmparser::{KnownCustom, Parser, Payload};

/// One `producers` section: how deep it sits, and what it names.
struct Producers {
    depth: usize,
    languages: Vec<String>,
    bindgen: bool,
}

/// The languages the guest was written in, most telling first; empty if
/// the component names none (or does not parse: uploads are validated
/// elsewhere).
pub fn languages(bytes: &[u8]) -> Vec<String> {
    let mut sections = Vec::new();
    let mut python = false;
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Vec::new();
        };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ImportSection(imports) => {
                python |= imports
                    .into_imports()
                    .flatten()
                    .any(|i| i.module.starts_with("libpython"));
            }
            Payload::CustomSection(custom) => {
                if let KnownCustom::Producers(reader) = custom.as_known() {
                    let mut section = Producers {
                        depth,
                        languages: Vec::new(),
                        bindgen: false,
                    };
                    for field in reader.into_iter().flatten() {
                        for value in field.values.into_iter().flatten() {
                            match field.name {
                                "language" => section.languages.push(pretty(value.name)),
                                "processed-by" if value.name.starts_with("wit-bindgen") => {
                                    section.bindgen = true;
                                }
                                _ => {}
                            }
                        }
                    }
                    sections.push(section);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    if python {
        found.push("Python".to_string());
    }
    let outer = sections.iter().filter(|s| s.depth == 0);
    found.extend(outer.flat_map(|s| s.languages.iter().cloned()));
    if found.is_empty() {
        let bound = sections.iter().filter(|s| s.bindgen);
        found.extend(bound.flat_map(|s| s.languages.iter().cloned()));
    }
    if found.is_empty() {
        found.extend(sections.iter().flat_map(|s| s.languages.iter().cloned()));
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|l| seen.insert(l.clone()));
    found
}

/// `C_plus_plus_14` → `C++14`; other names as written.
fn pretty(name: &str) -> String {
    match name.strip_prefix("C_plus_plus") {
        Some(rest) => format!("C++{}", rest.trim_start_matches('_')),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        Component, EntityType, ImportSection, Module, ModuleSection, ProducersField,
        ProducersSection, TypeSection,
    };

    fn producers(languages: &[&str], tool: &str) -> ProducersSection {
        let mut section = ProducersSection::new();
        if !languages.is_empty() {
            let mut field = ProducersField::new();
            for l in languages {
                field.value(l, "");
            }
            section.field("language", &field);
        }
        let mut by = ProducersField::new();
        by.value(tool, "1");
        section.field("processed-by", &by);
        section
    }

    /// A core module whose producers name `languages` and `tool`, importing
    /// a function from `import` if given.
    fn module(languages: &[&str], tool: &str, import: Option<&str>) -> Module {
        let mut module = Module::new();
        if let Some(from) = import {
            let mut types = TypeSection::new();
            types.ty().function([], []);
            module.section(&types);
            let mut imports = ImportSection::new();
            imports.import(from, "f", EntityType::Function(0));
            module.section(&imports);
        }
        module.section(&producers(languages, tool));
        module
    }

    fn component(inner: &[Module], outer_languages: &[&str]) -> Vec<u8> {
        let mut component = Component::new();
        for m in inner {
            component.section(&ModuleSection(m));
        }
        if !outer_languages.is_empty() {
            component.section(&producers(outer_languages, "wit-component"));
        }
        component.finish()
    }

    #[test]
    fn the_guests_own_language_is_told_apart_from_what_is_linked_in() {
        let adapter = || module(&["Rust"], "rustc", None);
        let rust = component(
            &[
                module(&["Rust", "C11"], "wit-bindgen-rust", None),
                adapter(),
            ],
            &[],
        );
        assert_eq!(languages(&rust), ["Rust", "C11"]);
        let c = component(&[module(&["C99"], "wit-bindgen-c", None), adapter()], &[]);
        assert_eq!(languages(&c), ["C99"]);
        let js = component(
            &[module(
                &["C11", "Rust", "C_plus_plus_14"],
                "wit-bindgen-c",
                None,
            )],
            &["JavaScript"],
        );
        assert_eq!(languages(&js), ["JavaScript"]);
        let python = component(
            &[
                adapter(),
                module(&[], "wit-component", Some("libpython3.14.so")),
            ],
            &[],
        );
        assert_eq!(languages(&python), ["Python"]);
        let unbound = component(&[module(&["C_plus_plus_17"], "clang", None)], &[]);
        assert_eq!(languages(&unbound), ["C++17"]);
        assert!(languages(&component(&[], &[])).is_empty());
        assert!(languages(b"not wasm").is_empty());
    }
}
