/* The list of sinks the stream knows: adding a sink adds one line here. */
#include "sinks/sink.h"

#include <stddef.h>

const struct zetl_sink_ops *const zetl_sink_registry[] = {
    /* The archive first: the warehouse applies the batch directories it stored. */
    &zetl_sink_archive_ops,
    &zetl_sink_warehouse_ops,
    NULL,
};
