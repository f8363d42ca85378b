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
    // WASI (and `wasi:http`, which the world imports) comes from
    // wasmtime-wasi and wasmtime-wasi-http; the linker adds them separately.
    with: {
        "wasi": wasmtime_wasi::p2::bindings::sync,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
    require_store_data_send: true,
    // A delivery is lent to the guest, not copied first: `handle` takes a
    // `Message<'_>` of borrowed fields, lowered straight from the delivery.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});

pub use switchyard::plugin::host::Host as HostImports;
pub use switchyard::plugin::types::{Host as TypesHost, LogLevel};
