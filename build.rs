//! Compiles `proto/cluster.proto` into tonic code with a pure-Rust protobuf compiler, so
//! building quorum needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    let descriptors = protox::compile(["proto/cluster.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Channel frames carry their payload as `Bytes`: relayed without a copy per hop.
        .bytes(".quorum.cluster.v1.ChannelFrame")
        .compile_fds(descriptors)?;
    Ok(())
}
