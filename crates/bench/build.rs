//! Compiles the vendored etcd KV subset (proto/etcd_kv.proto) into a tonic
//! client with protox, a pure-Rust protobuf compiler: no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd_kv.proto");
    let fds = protox::compile(["etcd_kv.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
