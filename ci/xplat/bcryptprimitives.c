/*
 * Stand-in bcryptprimitives.dll for Wine 8 (Debian 12), which does not have it.
 * Rust std >= 1.78 on Windows imports ProcessPrng from this DLL for HashMap seeds and the like;
 * without it no Rust test binary starts under Wine 8. Forwards to BCryptGenRandom, which Wine has.
 * Test-only: never shipped, only copied into the private Wine prefix of ci/xplat.
 */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE out, SIZE_T len)
{
    /* BCryptGenRandom takes a ULONG length: feed it in chunks. */
    const SIZE_T max_chunk = 1u << 28;
    while (len > 0) {
        ULONG n = (ULONG)(len < max_chunk ? len : max_chunk);
        if (BCryptGenRandom(NULL, out, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        out += n;
        len -= n;
    }
    return TRUE;
}
