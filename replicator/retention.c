/* Archive retention: the keep floors and one logged pass over a stream's archive. */
#include "replicator/retention.h"

#include <time.h>

#include "common/log.h"
#include "common/lsn.h"
#include "replicator/snapshot.h"

uint64_t zetl_retention_snapshot_floor(void *arg, const char *stream)
{
    return zetl_snapshot_floor(arg, stream);
}

uint64_t zetl_retention_no_floor(void *arg, const char *stream)
{
    (void)arg;
    (void)stream;
    return UINT64_MAX;
}

enum zetl_err zetl_retention_pass(struct zetl_archive *ar, const char *stream,
                                  uint64_t retention_ms, uint64_t applied_lsn, uint64_t floor_lsn,
                                  bool *again, struct zetl_errbuf *eb)
{
    struct zetl_archive_prune_result res;
    struct timespec now;
    uint64_t below = applied_lsn < floor_lsn ? applied_lsn : floor_lsn;
    int64_t before;
    enum zetl_err err;

    *again = false;
    clock_gettime(CLOCK_REALTIME, &now);
    before = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000 - (int64_t)retention_ms * 1000;
    err = zetl_archive_prune(ar, stream, before, below, &res, eb);
    if (res.leftovers > 0)
        zetl_logmsg("stream %s: retention finished %zu batch removal(s) an earlier run left "
                    "half done",
                    stream, res.leftovers);
    zetl_info("stream %s: retention removed %zu batch(es), %llu bytes; oldest remaining batch %s "
              "(kept: last commit within %llu ms, or at or above lsn " ZETL_LSN_FMT ")",
              stream, res.removed, (unsigned long long)res.bytes,
              res.oldest[0] ? res.oldest : "none", (unsigned long long)retention_ms,
              ZETL_LSN_ARGS(below));
    *again = err == ZETL_OK && res.more;
    return err;
}
