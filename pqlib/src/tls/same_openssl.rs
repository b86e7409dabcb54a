//! Whether the `SSL *` libpq hands out may be used through the `openssl` crate: only if both
//! run on one OpenSSL in this process (issue 13, finding 4).
//!
//! A system libpq links its own libssl; the `openssl` crate's `openssl-sys` may link another
//! (e.g. `openssl/vendored`, which any crate in the graph can switch on, builds OpenSSL into
//! the executable). Calling one OpenSSL's functions on the other's `SSL` is undefined
//! behaviour (valgrind: invalid reads in `SslRef::version_str`, then SIGSEGV), and nothing at
//! build time sees it: the two are linked independently. So it is checked at run time, once.
//!
//! Identity is told by static data that only one copy of the library has: the address of the
//! `SSL_METHOD` that `TLS_method()` returns (libssl) and of the string that
//! `OpenSSL_version(OPENSSL_VERSION)` returns (libcrypto). pqlib calls both through
//! `openssl-sys` ("ours") and through the symbols that libpq's references resolve to ("libpq's"):
//! looked up with `dlsym` in libpq's own dependency scope and in the process's global scope
//! (which the dynamic linker searches first). If libpq and ours sit in the same ELF object
//! (libpq built by pq-src and linked statically, the `vendored` features), the static linker
//! bound both to one definition. Anything that cannot be established counts as a mismatch.
//!
//! A test that links two OpenSSLs would need a second build of the whole suite with
//! `openssl/vendored`; the comparison is therefore a pure function over what was probed, with
//! unit tests for each case here, while tests/tls.rs checks the real same-library path
//! (system libpq in `cargo test`, pq-src with `vendored-openssl` in CI).

/// One OpenSSL copy, told by the addresses of static data inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// What `TLS_method()` returns: a static `SSL_METHOD` in libssl.
    pub(crate) ssl_method: usize,
    /// What `OpenSSL_version(OPENSSL_VERSION)` returns: a static string in libcrypto.
    pub(crate) version_text: usize,
}

/// What the process looks like; gathered by `probe`, judged by [`compare`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    /// The OpenSSL that `openssl-sys` (hence the `openssl` crate) calls.
    pub(crate) ours: Identity,
    /// The load address of the ELF object holding `ours`'s libssl data, if known.
    pub(crate) ours_object: Option<usize>,
    /// The load address of the ELF object holding libpq, if known.
    pub(crate) libpq_object: Option<usize>,
    /// The OpenSSL found from libpq's object and its dependencies, if any.
    pub(crate) libpq_scope: Option<Identity>,
    /// The OpenSSL the process's global scope resolves to, if it exports one.
    pub(crate) global_scope: Option<Identity>,
}

/// `Ok` only when libpq's OpenSSL is certainly `openssl-sys`'s.
pub(crate) fn compare(probe: &Probe) -> Result<(), String> {
    if let (Some(ours), Some(libpq)) = (probe.ours_object, probe.libpq_object) {
        if ours == libpq {
            // One object: every reference to an OpenSSL symbol in it was bound to one
            // definition when it was linked.
            return Ok(());
        }
    }
    match probe.libpq_scope {
        Some(theirs) if theirs == probe.ours => {}
        Some(_) => {
            return Err(
                "libpq uses another OpenSSL library than the `openssl` crate \
                        (e.g. a system libpq with `openssl/vendored`)"
                    .into(),
            );
        }
        None => return Err("cannot find the OpenSSL library that libpq uses".into()),
    }
    match probe.global_scope {
        // The dynamic linker searches the global scope first: it must not hold a third copy.
        Some(global) if global != probe.ours => Err(
            "the process exports another OpenSSL library than the one the `openssl` crate uses"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The probe of this process; `libpq_data` is a pointer to static data inside libpq.
#[cfg(unix)]
pub(crate) fn probe(libpq_data: *const std::ffi::c_void) -> Probe {
    use std::ffi::{c_char, c_int, c_void};

    type TlsMethod = unsafe extern "C" fn() -> *const c_void;
    type Version = unsafe extern "C" fn(c_int) -> *const c_char;
    const OPENSSL_VERSION: c_int = 0;

    fn object_of(address: *const c_void) -> Option<(usize, *const c_char)> {
        // SAFETY: dladdr only reads the loader's tables; `info` is a valid out-parameter and
        // is only read when dladdr reports success.
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            if libc::dladdr(address, &mut info) == 0 || info.dli_fbase.is_null() {
                return None;
            }
            Some((info.dli_fbase as usize, info.dli_fname))
        }
    }

    fn lookup(handle: *mut c_void) -> Option<Identity> {
        // SAFETY: dlsym on a valid handle (or RTLD_DEFAULT) with NUL-terminated names. A
        // non-NULL result for these names is OpenSSL's function of that name, whose C types
        // are the ones transmuted to (OpenSSL >= 1.1.0, as openssl-sys declares them); both
        // take no pointers and return pointers to static data.
        unsafe {
            let method = libc::dlsym(handle, c"TLS_method".as_ptr());
            let version = libc::dlsym(handle, c"OpenSSL_version".as_ptr());
            if method.is_null() || version.is_null() {
                return None;
            }
            let method: TlsMethod = std::mem::transmute(method);
            let version: Version = std::mem::transmute(version);
            Some(Identity {
                ssl_method: method() as usize,
                version_text: version(OPENSSL_VERSION) as usize,
            })
        }
    }

    // SAFETY: openssl-sys's own declarations; both return pointers to static data.
    let ours = unsafe {
        Identity {
            ssl_method: openssl_sys::TLS_method() as usize,
            version_text: openssl_sys::OpenSSL_version(OPENSSL_VERSION) as usize,
        }
    };
    let ours_object = object_of(ours.ssl_method as *const c_void).map(|(base, _)| base);
    let libpq = object_of(libpq_data);
    let libpq_scope = libpq.and_then(|(_, name)| {
        // SAFETY: `name` is the loader's NUL-terminated path of an object that is loaded
        // (RTLD_NOLOAD: never loads anything). Without a handle by that name (the main
        // program), dlopen(NULL) gives the main program and its dependencies. The handle is
        // closed after the lookup, which only drops the reference taken here.
        unsafe {
            let mut handle = libc::dlopen(name, libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            if handle.is_null() {
                handle = libc::dlopen(std::ptr::null(), libc::RTLD_LAZY);
            }
            if handle.is_null() {
                return None;
            }
            let found = lookup(handle);
            libc::dlclose(handle);
            found
        }
    });
    Probe {
        ours,
        ours_object,
        libpq_object: libpq.map(|(base, _)| base),
        libpq_scope,
        global_scope: lookup(libc::RTLD_DEFAULT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Identity = Identity {
        ssl_method: 0x1000,
        version_text: 0x2000,
    };
    const B: Identity = Identity {
        ssl_method: 0x9000,
        version_text: 0xa000,
    };

    fn probe(libpq_scope: Option<Identity>, global_scope: Option<Identity>) -> Probe {
        Probe {
            ours: A,
            ours_object: Some(0x10),
            libpq_object: Some(0x20),
            libpq_scope,
            global_scope,
        }
    }

    #[test]
    fn the_same_library_everywhere_is_accepted() {
        assert_eq!(compare(&probe(Some(A), Some(A))), Ok(()));
        // Nothing exported globally (e.g. a static OpenSSL): libpq's own scope decides.
        assert_eq!(compare(&probe(Some(A), None)), Ok(()));
    }

    #[test]
    fn libpq_and_openssl_sys_in_one_object_are_accepted() {
        // pq-src's static libpq and openssl-sys's OpenSSL linked into one executable: no
        // dlsym can see the (unexported) symbols, and it need not.
        let mut p = probe(None, None);
        p.libpq_object = p.ours_object;
        assert_eq!(compare(&p), Ok(()));
    }

    #[test]
    fn another_openssl_in_libpqs_scope_is_refused() {
        // System libpq (its libssl.so) with openssl/vendored (OpenSSL in the executable).
        let e = compare(&probe(Some(B), None)).unwrap_err();
        assert!(e.contains("another OpenSSL"), "{e}");
        // Only libcrypto differs: refused as well.
        let half = Identity {
            ssl_method: A.ssl_method,
            version_text: B.version_text,
        };
        assert!(compare(&probe(Some(half), Some(half))).is_err());
    }

    #[test]
    fn another_openssl_in_the_global_scope_is_refused() {
        assert!(compare(&probe(Some(A), Some(B))).is_err());
    }

    #[test]
    fn an_unknown_libpq_openssl_is_refused() {
        assert!(compare(&probe(None, Some(A))).is_err());
        let mut p = probe(None, None);
        p.libpq_object = None;
        assert!(compare(&p).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn this_process_uses_one_openssl() {
        // libpq's static "OpenSSL" string (NULL with libpq 14 or without TLS support).
        // SAFETY: a NULL connection is allowed; the result is NULL or a static string.
        let data = unsafe { pqlib_sys::PQsslAttribute(std::ptr::null_mut(), c"library".as_ptr()) };
        if data.is_null() {
            return;
        }
        let probe = super::probe(data.cast());
        assert!(probe.libpq_object.is_some(), "{probe:?}");
        assert_eq!(compare(&probe), Ok(()), "{probe:?}");
    }
}
