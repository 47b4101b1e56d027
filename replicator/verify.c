/* zetl verify: source and warehouse compared per tenant and table. */
#include <stdio.h>

#include "replicator/commands.h"

int zetl_cmd_verify(const struct zetl_config *cfg)
{
    if (cfg->warehouse.kind == ZETL_WH_NONE) {
        fprintf(stderr, "zetl verify: %s has no warehouse section: there is nothing to compare "
                        "the source with\n",
                cfg->path);
        return 2;
    }
    fprintf(stderr, "zetl verify: the warehouse apply path is not built yet\n");
    return 1;
}
