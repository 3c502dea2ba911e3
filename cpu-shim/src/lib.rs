#![no_std]
use core::ffi::{c_char, c_int, c_long, c_void};

#[link(name = "c")]
extern "C" {
    fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void;
}
core::arch::global_asm!(".symver dlsym, dlsym@GLIBC_2.2.5");
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
pub extern "C" fn sysconf(name: c_int) -> c_long {
    unsafe {
        let f = dlsym(-1isize as *mut c_void, c"sysconf".as_ptr());
        let f: extern "C" fn(c_int) -> c_long = core::mem::transmute(f);
        if name == 84 {
            return 1;
        }
        f(name)
    }
}
