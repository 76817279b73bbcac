//! Generates the protobuf and tonic code for `proto/` with protox (a pure-Rust protobuf
//! compiler), so building the tools never needs `protoc` on the machine. The encoded
//! descriptor set is kept in OUT_DIR for the gRPC reflection service.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["messages.proto"], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("messages_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
