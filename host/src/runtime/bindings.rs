//! Host-side bindings generated from the WIT package `switchyard:plugin`
//! (guest-sdk/wit), the single definition of the plugin ABI.

wasmtime::component::bindgen!({
    world: "consumer",
    path: "../guest-sdk/wit",
});

pub use switchyard::plugin::host::Host as HostImports;
pub use switchyard::plugin::types::{Host as TypesHost, LogLevel};
