//! Host-side bindings generated from the WIT package `switchyard:plugin`
//! (guest-sdk/wit), the single definition of the plugin ABI.

wasmtime::component::bindgen!({
    world: "consumer",
    path: "../guest-sdk/wit",
    // Breaking a kv limit (or a failed store read) traps the attempt.
    imports: {
        "switchyard:plugin/host.kv-get": trappable,
        "switchyard:plugin/host.kv-set": trappable,
        "switchyard:plugin/host.kv-delete": trappable,
    },
});

pub use switchyard::plugin::host::Host as HostImports;
pub use switchyard::plugin::types::{Host as TypesHost, LogLevel};
