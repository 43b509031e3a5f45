fn main() -> aya_build::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitor-ebpf");
    aya_build::build_ebpf([aya_build::Package { name: "monitor-ebpf", root_dir: root, ..Default::default() }], aya_build::Toolchain::Custom("debian-bpf"))
}
