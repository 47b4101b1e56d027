/* The list of sinks the stream knows: adding a sink adds one line here. */
#include "sinks/sink.h"

#include <stddef.h>

const struct zetl_sink_ops *const zetl_sink_registry[] = {
    /*
     * Kafka reads the batch files where the batcher sealed them, before the
     * archive moves them; the warehouse applies the batch directories the
     * archive stored.
     */
    &zetl_sink_kafka_ops,
    &zetl_sink_archive_ops,
    &zetl_sink_warehouse_ops,
    NULL,
};
