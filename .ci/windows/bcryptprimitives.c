/* CI support, not part of vhdkit: Debian's wine lacks bcryptprimitives.dll, whose
 * ProcessPrng Rust's standard library imports on Windows. This stub exports it over
 * RtlGenRandom (advapi32's SystemFunction036), so that the Windows test binaries run
 * under wine. Built by .ci/windows/run-tests with x86_64-w64-mingw32-gcc. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
