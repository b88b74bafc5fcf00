/* Code that checks its own bytes in memory (as OpenSSL's FIPS canister does between
 * FIPS_text_start and FIPS_text_end): the loader must leave it unpatched, so the
 * bytes of its system-call site read back as the file has them. */
#include <stdio.h>
#include <unistd.h>

const char FIPS_text_start[] = "the module checks its own code";
extern const unsigned char selfcheck_site[];
__asm__(".text\n.globl selfcheck_site\nselfcheck_site:\nmov $39,%eax\nsyscall\nret\n");

int main(void) {
    long pid = ((long (*)(void))selfcheck_site)();
    printf("site bytes %02x %02x %02x %02x %02x %02x %02x, getpid %s\n",
           selfcheck_site[0], selfcheck_site[1], selfcheck_site[2], selfcheck_site[3],
           selfcheck_site[4], selfcheck_site[5], selfcheck_site[6],
           pid == getpid() ? "ok" : "wrong");
    return 0;
}
