/*
 * The archive as a sink: a batch is durable once its directory is in the
 * archive (file:// or s3://).  The archive itself is opened by the process
 * and shared by its streams, so the sink only borrows it.
 */
#include "sinks/sink.h"

#include <stdlib.h>

#include "common/mem.h"

struct archive_sink {
    struct zetl_archive *ar; /* borrowed */
    const char *stream;      /* borrowed */
};

static bool archive_configured(const struct zetl_config *cfg)
{
    return cfg->archive.url != NULL;
}

static enum zetl_err archive_open(const struct zetl_sink_env *env, void **state,
                                  struct zetl_sink_pos *pos, struct zetl_errbuf *eb)
{
    struct archive_sink *as;
    enum zetl_err err;

    /* The newest complete batch: everything up to it was durable before we started. */
    err = zetl_archive_last_lsn(env->ar, env->stream, &pos->last_lsn, &pos->end_lsn, eb);
    if (err)
        return err;
    as = zetl_calloc(1, sizeof(*as));
    as->ar = env->ar;
    as->stream = env->stream;
    *state = as;
    return ZETL_OK;
}

static enum zetl_err archive_put(void *state, const struct zetl_batch *b, struct zetl_errbuf *eb)
{
    struct archive_sink *as = state;

    return zetl_archive_put(as->ar, b, eb);
}

static void archive_close(void *state)
{
    free(state);
}

const struct zetl_sink_ops zetl_sink_archive_ops = {
    .name = "archive",
    .must_be_durable = true,
    .configured = archive_configured,
    .open = archive_open,
    .start = NULL,
    .put = archive_put,
    .note_idle = NULL,
    .close = archive_close,
};
