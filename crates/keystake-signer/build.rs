//! Compiles the gRPC contract (`proto/keystake/v1/*.proto`) into Rust with tonic. `protoc` comes
//! from the `protoc-bin-vendored` crate, so building needs no system protobuf compiler.
#![forbid(unsafe_code)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded; nothing else reads the environment concurrently.
    std::env::set_var("PROTOC", protoc);
    let protos = [
        "../../proto/keystake/v1/signer.proto",
        "../../proto/keystake/v1/admin.proto",
        "../../proto/keystake/v1/dkg.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["../../proto"])?;
    Ok(())
}
