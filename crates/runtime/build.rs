//! Compiles the client API's protobuf definition (proto/synod/v1/synod.proto)
//! into tonic server and client code with protox, a pure-Rust protobuf
//! compiler: no system `protoc`. The code is included by `src/grpc.rs` as
//! `synod_runtime::grpc::proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/synod/v1/synod.proto");
    let fds = protox::compile(["synod/v1/synod.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
