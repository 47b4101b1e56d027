/* zetl command line entry point. */
#include <stdio.h>

int main(void)
{
    printf("zetl %s\n", ZETL_VERSION);
    return 0;
}
