//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so no
//! system `protoc` is needed, then generates Rust with prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["hotline.proto", "store.proto", "snapshot.proto"],
        ["proto"],
    )?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
