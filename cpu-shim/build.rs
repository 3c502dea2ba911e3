//! Link `libdl.so.2` explicitly: on glibc older than 2.34 `dlsym` lives there,
//! not in `libc.so.6`. (On musl the loader maps `libdl.so.2` to libc itself.)
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-cdylib-link-arg=-l:libdl.so.2");
}
