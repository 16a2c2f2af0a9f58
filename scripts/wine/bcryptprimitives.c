/* A stand-in for Windows' bcryptprimitives.dll under wine 8, which lacks
 * ProcessPrng (Rust's standard library calls it for HashMap keys and other
 * randomness since Rust 1.78; wine added it in wine 9). Only for running the
 * Windows build under wine: see run-windows-smoke.sh. Not shipped, not used
 * on real Windows. */
#include <windows.h>

/* advapi32's RtlGenRandom, exported as SystemFunction036. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
