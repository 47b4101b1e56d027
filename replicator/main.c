/* zetl command line: run, check, verify, replay, ... The composition root of the daemon. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "config/config.h"
#include "replicator/bufdir.h"
#include "replicator/commands.h"
#include "replicator/help.h"
#include "replicator/load.h"
#include "replicator/replay.h"
#include "replicator/slots.h"
#include "replicator/snapshot.h"
#include "replicator/source.h"
#include "replicator/stop.h"
#include "replicator/stream.h"
#include "replicator/tenants.h"
#include "sinks/archive.h"
#include "sinks/kafka.h"
#include "sinks/warehouse/wh.h"

#define EXIT_JOB 1
#define EXIT_USAGE 2

static void on_signal(int sig)
{
    (void)sig;
    zetl_stop_request();
}

/*
 * Takes a session advisory lock on the source per slot group, held while
 * `conn` lives: a second zetl on the same slots (whatever its buffer.dir)
 * stops at once instead of taking turns on the slot.
 */
static enum zetl_err lock_slot_groups(PGconn *conn, const struct zetl_source_plan *plan,
                                      struct zetl_errbuf *eb)
{
    static const char lock_sql[] = "SELECT pg_try_advisory_lock(hashtext('zetl'), hashtext($1))";
    static const char holder_sql[] =
        "SELECT coalesce(a.application_name, '') || ' (backend pid ' || a.pid || "
        "coalesce(', client ' || host(a.client_addr), '') || ')' FROM pg_catalog.pg_locks l "
        "JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND "
        "l.objsubid = 2 AND l.granted AND l.database = (SELECT oid FROM pg_catalog.pg_database "
        "WHERE datname = current_database()) AND l.classid::text::bigint = "
        "(hashtext('zetl')::bigint + 4294967296) % 4294967296 AND l.objid::text::bigint = "
        "(hashtext($1)::bigint + 4294967296) % 4294967296 LIMIT 1";

    for (size_t i = 0; i < plan->ngroups; i++) {
        const char *name = plan->groups[i].name;
        PGresult *res = PQexecParams(conn, lock_sql, 1, NULL, &name, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        bool held = ok && strcmp(PQgetvalue(res, 0, 0), "t") == 0;

        PQclear(res);
        if (!ok)
            return zetl_err_set(eb, ZETL_ERR_RETRY, "could not lock slot group \"%s\": %s", name,
                                PQerrorMessage(conn));
        if (held)
            continue;
        res = PQexecParams(conn, holder_sql, 1, NULL, &name, NULL, NULL, 0);
        zetl_err_set(eb, ZETL_ERR_FATAL,
                     "slot group \"%s\" is streamed by another zetl process: %s; stop it first "
                     "(two processes must never consume one slot)",
                     name,
                     PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
                         ? PQgetvalue(res, 0, 0)
                         : "its session holds the slot group's lock");
        PQclear(res);
        return ZETL_ERR_FATAL;
    }
    return ZETL_OK;
}

struct stream_thread {
    struct zetl_stream *st;
    pthread_t tid;
    enum zetl_err err;
    struct zetl_errbuf eb;
};

static void *stream_thread_main(void *arg)
{
    struct stream_thread *t = arg;

    t->err = zetl_stream_run(t->st, &t->eb);
    if (t->err != ZETL_OK)
        zetl_stop_request(); /* one stream failing stops the job */
    return NULL;
}

/*
 * What to check in a DSN whose connection failed with msg (libpq's words):
 * a certificate that could not be verified is not about host or password.
 */
static const char *dsn_hint(const char *msg, const char *otherwise)
{
    if (strstr(msg, "certificate") != NULL || strstr(msg, "SSL") != NULL)
        return "sslmode and sslrootcert (with sslmode=verify-full, sslrootcert names the CA "
               "that signed the server's certificate, and host is a name the certificate is "
               "for)";
    return otherwise;
}

/*
 * Opens what `zetl run` writes to: the archive, the warehouse (only probed
 * here; each stream opens its own), and buffer.dir's lock (*lock_fd).
 * Returns 0 or the exit code; what was opened is the caller's to release.
 */
/* A construct of the warehouse's live probe: logged, the failures as errors. */
static void probe_line(void *arg, const char *construct, bool ok, const char *detail)
{
    (void)arg;
    if (ok)
        zetl_info("warehouse probe: %s: as expected", construct);
    else
        zetl_error("warehouse probe: %s: %s", construct, detail);
}

static int run_open_sinks(const struct zetl_config *cfg, struct zetl_archive **ar, int *lock_fd)
{
    struct zetl_errbuf eb;
    enum zetl_err err;

    if (cfg->archive.url == NULL && cfg->warehouse.kind != ZETL_WH_NONE) {
        zetl_log(ZETL_LOG_FATAL,
                 "%s: archive.url is required (the warehouse path reads "
                 "batches from the archive)",
                 cfg->path);
        return EXIT_USAGE;
    }
    if (cfg->archive.url != NULL && (err = zetl_archive_open(cfg, ar, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
    }
    if (cfg->kafka.enabled && (err = zetl_kafka_check(cfg, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
    }
    if (cfg->warehouse.kind != ZETL_WH_NONE) {
        struct zetl_wh *wh = NULL;
        int failed = 0;

        /* Before anything is written: constructs the warehouse's SQL relies on (Redshift). */
        if ((err = zetl_wh_probe(cfg, probe_line, NULL, &failed, &eb)) == ZETL_OK && failed > 0) {
            zetl_log(ZETL_LOG_FATAL,
                     "the warehouse does not behave as zetl's SQL needs (%d construct(s) "
                     "above); refusing to start (docs/warehouse.md, \"The live probe\")",
                     failed);
            return EXIT_JOB;
        }
        if (err == ZETL_OK)
            err = zetl_wh_open(cfg, &wh, &eb);
        if (err != ZETL_OK) {
            zetl_log(ZETL_LOG_FATAL, "could not open the warehouse: %s", eb.msg);
            zetl_log(ZETL_LOG_FATAL, "check warehouse.dsn (or ZETL_WAREHOUSE_DSN): %s",
                     dsn_hint(eb.msg, "host, port, user and password, and that the "
                                      "warehouse accepts connections"));
            return EXIT_JOB;
        }
        zetl_wh_free(wh);
    }
    if ((err = zetl_fs_lock_dir(cfg->buffer.dir, lock_fd, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "buffer.dir: %s", eb.msg);
        return EXIT_JOB;
    }
    return 0;
}

/*
 * source.snapshot: initial: a slot group whose slot is about to be created
 * owes its tables' existing rows.  Recorded before the slot exists, so a
 * crash in between does not forget it.
 */
static enum zetl_err mark_initial_snapshots(PGconn *conn, const struct zetl_config *cfg,
                                            const struct zetl_source_plan *plan,
                                            struct zetl_errbuf *eb)
{
    if (!cfg->source.snapshot)
        return ZETL_OK;
    for (size_t i = 0; i < plan->ngroups; i++) {
        const char *name = plan->groups[i].name;
        PGresult *res;
        enum zetl_err err = zetl_source_exec(
            conn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", 1, &name, &res, eb);
        bool exists;

        if (err)
            return err;
        exists = PQntuples(res) > 0;
        PQclear(res);
        if (!exists && (err = zetl_snapshot_mark_initial(cfg, name, eb)) != ZETL_OK)
            return err;
    }
    return ZETL_OK;
}

/*
 * Claims the slot groups of `plan` for this process on the source: their
 * locks (held by conn's session), the slots' preflight, then publications
 * and slots; in once mode, reads the WAL position to catch up to.
 */
static enum zetl_err run_claim_source(PGconn *conn, const struct zetl_config *cfg,
                                      const struct zetl_source_plan *plan, struct zetl_archive *ar,
                                      struct zetl_stream_opts *opts, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if ((err = lock_slot_groups(conn, plan, eb)) != ZETL_OK)
        return err;
    /* A lost slot or a tenant moved between slot groups stops here, before any change. */
    if ((err = zetl_slots_preflight(conn, cfg, plan, ar, eb)) != ZETL_OK)
        return err;
    if ((err = mark_initial_snapshots(conn, cfg, plan, eb)) != ZETL_OK ||
        (err = zetl_tenants_mark_new(conn, cfg, plan, eb)) != ZETL_OK ||
        (err = zetl_source_setup(conn, cfg, plan, eb)) != ZETL_OK)
        return err;
    if (opts->once) {
        if ((err = zetl_source_current_lsn(conn, &opts->target_lsn, eb)) != ZETL_OK)
            return err;
        zetl_logmsg("catching up to source WAL position " ZETL_LSN_FMT,
                    ZETL_LSN_ARGS(opts->target_lsn));
    }
    return ZETL_OK;
}

/* Streams every slot group of `plan` on its own thread until all stop; returns the exit code. */
/* `zetl snapshot` without a daemon: the tables to copy again (empty lists: all). */
struct run_requests {
    const struct zetl_strlist *tenants, *tables;
};

static int run_streams(PGconn *conn, const struct zetl_config *cfg,
                       const struct zetl_source_plan *plan, struct zetl_archive *ar,
                       const struct zetl_stream_opts *opts, const struct run_requests *req)
{
    struct zetl_tenants *tenants = NULL;
    struct stream_thread *threads = zetl_calloc(plan->ngroups, sizeof(*threads));
    struct zetl_snapshotter *snap = zetl_snapshotter_new(cfg);
    struct zetl_errbuf eb;
    enum zetl_err err;
    int rc = EXIT_JOB;
    size_t started = 0;

    for (size_t i = 0; i < plan->ngroups; i++) {
        struct zetl_snapwin *w;

        err = zetl_stream_new(cfg, &plan->groups[i], ar, opts, &threads[i].st, &eb);
        if (err == ZETL_OK)
            err = zetl_snapshotter_add_stream(snap, conn, plan->groups[i].name,
                                              zetl_stream_spool_dir(threads[i].st), &w, &eb);
        if (err) {
            zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
            goto done;
        }
        zetl_stream_set_snapshot(threads[i].st, w);
    }
    if (req != NULL) {
        size_t queued;
        err = zetl_tenants_request(conn, cfg, plan, snap, req->tenants, req->tables, &queued, &eb);
        if (err) {
            zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
            rc = err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
            goto done;
        }
    }
    if ((err = zetl_snapshotter_start(snap, &eb)) != ZETL_OK ||
        (!opts->once && (err = zetl_tenants_start(cfg, plan, snap, &tenants, &eb)) != ZETL_OK)) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        zetl_snapshotter_stop(snap);
        goto done;
    }
    zetl_logmsg("zetl %s streaming %zu slot group(s)", ZETL_VERSION, plan->ngroups);
    for (started = 0; started < plan->ngroups; started++) {
        if (pthread_create(&threads[started].tid, NULL, stream_thread_main, &threads[started]) !=
            0) {
            zetl_log(ZETL_LOG_FATAL, "could not start stream thread");
            zetl_stop_request();
            break;
        }
    }
    rc = 0;
    for (size_t i = 0; i < started; i++) {
        pthread_join(threads[i].tid, NULL);
        if (threads[i].err != ZETL_OK) {
            zetl_log(ZETL_LOG_FATAL, "%s", threads[i].eb.msg);
            rc = EXIT_JOB;
        }
    }
    if (started < plan->ngroups)
        rc = EXIT_JOB;
    zetl_tenants_stop(tenants);
    zetl_snapshotter_stop(snap);
    if (zetl_snapshotter_error(snap, &eb) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        rc = EXIT_JOB;
    }
    if (rc == 0)
        zetl_logmsg(opts->once ? "caught up; exiting" : "shut down cleanly");

done:
    for (size_t i = 0; i < plan->ngroups; i++)
        zetl_stream_free(threads[i].st);
    zetl_snapshotter_free(snap);
    free(threads);
    return rc;
}

static int cmd_run(const struct zetl_config *cfg, bool once, const struct run_requests *req)
{
    struct zetl_errbuf eb;
    struct zetl_source_plan plan = {0};
    struct zetl_archive *ar = NULL;
    struct zetl_stream_opts opts = {once, 0};
    PGconn *conn = NULL;
    enum zetl_err err;
    int rc = EXIT_JOB, lock_fd = -1;

    /* Local state before any connection: a bad buffer.dir is named with its file and line. */
    if ((err = zetl_bufdir_check(cfg, "spool", &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return EXIT_JOB;
    }
    err = zetl_source_connect(cfg->source.dsn, false, "zetl", &conn, &eb);
    if (err) {
        zetl_log(ZETL_LOG_FATAL, "could not connect to the source database: %s", eb.msg);
        zetl_log(ZETL_LOG_FATAL, "check source.dsn (or ZETL_SOURCE_DSN): %s",
                 dsn_hint(eb.msg, "host, port, user and password, and that the server "
                                  "accepts connections"));
        return EXIT_JOB;
    }
    if ((err = zetl_source_preflight(conn, &eb)) != ZETL_OK ||
        (err = zetl_source_discover(conn, cfg, &plan, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        goto done;
    }
    /* Sinks and local state first: nothing is created on the source when they are unusable. */
    if ((rc = run_open_sinks(cfg, &ar, &lock_fd)) != 0)
        goto done;
    if ((err = run_claim_source(conn, cfg, &plan, ar, &opts, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        rc = EXIT_JOB;
        goto done;
    }
    /* conn stays open: its session holds the slot groups' locks until the end. */
    rc = run_streams(conn, cfg, &plan, ar, &opts, req);

done:
    zetl_archive_free(ar);
    zetl_source_plan_release(&plan);
    if (conn)
        PQfinish(conn);
    if (lock_fd >= 0)
        close(lock_fd);
    return rc;
}

/*
 * zetl snapshot: a running zetl run (holding buffer.dir) takes the request
 * and copies the tables while it streams; without one, this process runs the
 * streams until they are copied and caught up.
 */
static int cmd_snapshot(const struct zetl_config *cfg, const struct zetl_strlist *tenants,
                        const struct zetl_strlist *tables)
{
    struct run_requests req = {tenants, tables};
    struct zetl_errbuf eb;
    char *path = NULL;
    int fd = -1, waited = 0;

    if (!cfg->source.snapshot) {
        fprintf(stderr, "zetl snapshot: %s sets source.snapshot: never\n", cfg->path);
        return EXIT_USAGE;
    }
    if (zetl_bufdir_check(cfg, "spool", &eb) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return EXIT_JOB;
    }
    if (zetl_fs_lock_dir(cfg->buffer.dir, &fd, &eb) == ZETL_OK) {
        close(fd);
        int rc;
        zetl_logmsg("no zetl run holds %s: copying here", cfg->buffer.dir);
        rc = cmd_run(cfg, true, &req);
        /* Interrupted: the tables are not all copied (they resume at the next start). */
        if (rc == 0 && zetl_stop_requested() && zetl_snapshot_pending(cfg))
            rc = EXIT_JOB;
        return rc;
    }
    if (zetl_tenants_leave_request(cfg, tenants, tables, &path, &eb) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return EXIT_JOB;
    }
    /* The daemon takes it within half a second; an error comes back as NAME.error. */
    while (access(path, F_OK) == 0 && waited < 60000 && !zetl_stop_requested()) {
        zetl_stop_sleep(200);
        waited += 200;
    }
    if (access(path, F_OK) == 0) {
        unlink(path);
        zetl_log(ZETL_LOG_FATAL,
                 "the zetl holding %s did not take the snapshot request within 60 s (is it a "
                 "zetl run of this configuration?)",
                 cfg->buffer.dir);
        free(path);
        return EXIT_JOB;
    }
    strcpy(path + strlen(path) - 5, ".error");
    {
        struct zetl_buf msg;
        zetl_buf_init(&msg, 0);
        if (zetl_fs_read_file(path, 1 << 20, &msg, &eb) == ZETL_OK) {
            unlink(path);
            zetl_log(ZETL_LOG_FATAL, "zetl snapshot: %s", msg.data ? msg.data : "");
            zetl_buf_release(&msg);
            free(path);
            return EXIT_USAGE;
        }
        zetl_buf_release(&msg);
    }
    free(path);
    zetl_logmsg("the running zetl queued the snapshot; waiting until the tables are copied");
    while (zetl_snapshot_pending(cfg) && !zetl_stop_requested()) {
        zetl_stop_sleep(500);
        /* The lock free again: the daemon is gone before it finished. */
        if (zetl_fs_lock_dir(cfg->buffer.dir, &fd, &eb) == ZETL_OK) {
            close(fd);
            if (zetl_snapshot_pending(cfg)) {
                zetl_log(ZETL_LOG_FATAL,
                         "the zetl run holding %s stopped before the snapshot was done; it "
                         "resumes at its next start",
                         cfg->buffer.dir);
                return EXIT_JOB;
            }
        }
    }
    if (zetl_stop_requested())
        return EXIT_JOB;
    zetl_logmsg("snapshot done");
    return 0;
}

static int cmd_apply_batch(const struct zetl_config *cfg, const char *dir)
{
    struct zetl_wh *wh = NULL;
    struct zetl_errbuf eb;
    enum zetl_err err;

    if (cfg->warehouse.kind == ZETL_WH_NONE) {
        fprintf(stderr, "zetl apply-batch: %s has no warehouse section\n", cfg->path);
        return EXIT_USAGE;
    }
    err = zetl_wh_open(cfg, &wh, &eb);
    if (err == ZETL_OK)
        err = zetl_wh_apply_dir(wh, dir, &eb);
    if (err != ZETL_OK)
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
    zetl_wh_free(wh);
    return err == ZETL_OK ? 0 : EXIT_JOB;
}

/*
 * Re-applies one table's rows (NULL: every table's) from every archived
 * batch of every stream, oldest first; with `rebuild`, the table's rows are
 * deleted first.  Holds buffer.dir's lock: the daemon must not apply at the
 * same time.
 */
static int cmd_resync(const struct zetl_config *cfg, const char *table, bool rebuild)
{
    const char *what = table ? table : "every table";
    struct zetl_archive *ar = NULL;
    struct zetl_wh *wh = NULL;
    struct zetl_errbuf eb;
    enum zetl_err err;
    size_t applied = 0;
    int lock_fd = -1;

    if (cfg->warehouse.kind == ZETL_WH_NONE || cfg->archive.url == NULL) {
        fprintf(stderr, "zetl resync: %s needs both an archive and a warehouse section\n",
                cfg->path);
        return EXIT_USAGE;
    }
    if ((err = zetl_bufdir_check(cfg, NULL, &eb)) != ZETL_OK)
        goto done;
    if ((err = zetl_fs_lock_dir(cfg->buffer.dir, &lock_fd, &eb)) != ZETL_OK) {
        zetl_err_prefix(&eb, "buffer.dir");
        goto done;
    }
    if ((err = zetl_archive_open(cfg, &ar, &eb)) != ZETL_OK ||
        (err = zetl_wh_open(cfg, &wh, &eb)) != ZETL_OK)
        goto done;
    if (rebuild && (err = zetl_wh_clear_table(wh, table, &eb)) != ZETL_OK)
        goto done;
    for (int g = 0; g < cfg->source.slot_groups && err == ZETL_OK; g++) {
        char stream[128];
        struct zetl_strlist names = {NULL, 0};

        snprintf(stream, sizeof(stream), "%s_%d", cfg->source.slot, g);
        if ((err = zetl_archive_list(ar, stream, 0, &names, &eb)) != ZETL_OK)
            break;
        for (size_t i = 0; i < names.n && err == ZETL_OK; i++) {
            uint64_t rows;
            bool skipped;

            err = zetl_replay_batch(ar, wh, stream, names.items[i], table, NULL, &rows, &skipped,
                                    &eb);
            applied += err == ZETL_OK;
        }
        zetl_strlist_release(&names);
    }
done:
    if (err != ZETL_OK)
        zetl_log(ZETL_LOG_FATAL, "resync of %s%s%s: %s", table ? "table \"" : "", what,
                 table ? "\"" : "", eb.msg);
    else
        zetl_logmsg("resync of %s%s%s: %zu archived batch(es) applied", table ? "table \"" : "",
                    what, table ? "\"" : "", applied);
    zetl_wh_free(wh);
    zetl_archive_free(ar);
    if (lock_fd >= 0)
        close(lock_fd);
    return err == ZETL_OK ? 0 : EXIT_JOB;
}

/*
 * zetl bench: the benchmark harness (bench/zetlbench.py, never linked into the
 * daemon) run against the config's source and warehouse.  The DSNs go through
 * the environment, so passwords never show on a command line.
 */
static int cmd_bench(int argc, char **argv)
{
    const char *config_path = NULL;
    char **args = zetl_calloc((size_t)argc + 4, sizeof(char *));
    char self[4096], script[4200];
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb;
    const char *dir = getenv("ZETL_BENCH_DIR");
    bool help = false;
    int n = 0;
    ssize_t len;

    for (int i = 2; i < argc; i++)
        help = help || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0;
    if (help) {
        /* zetl's own page, then the harness's options (its --help needs no config). */
        zetl_help_print(stdout, "bench", NULL);
        fflush(stdout);
    }
    len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0) {
        fprintf(stderr, "zetl bench: could not find the zetl binary: %s\n", strerror(errno));
        return EXIT_JOB;
    }
    self[len] = '\0';
    if (dir != NULL)
        snprintf(script, sizeof(script), "%s/zetlbench.py", dir);
    else
        snprintf(script, sizeof(script), "%.*s/../bench/zetlbench.py",
                 (int)(strrchr(self, '/') - self), self);
    if (help && access(script, R_OK) != 0) {
        printf("\nThe harness is not at \"%s\": set ZETL_BENCH_DIR to list its workloads and "
               "options.\n",
               script);
        free(args);
        return 0;
    }
    if (help) {
        printf("\nThe harness's workloads and options (zetl passes zetl_bin itself):\n\n");
        fflush(stdout);
        args[n++] = "python3";
        args[n++] = script;
        args[n++] = self;
        args[n++] = "--help";
        args[n] = NULL;
        execvp("python3", args);
        fprintf(stderr, "zetl bench: could not run python3: %s\n", strerror(errno));
        free(args);
        return EXIT_JOB;
    }
    if (access(script, R_OK) != 0) {
        fprintf(stderr,
                "zetl bench: could not find the harness at \"%s\" (set ZETL_BENCH_DIR to "
                "the bench directory of the zetl source tree)\n",
                script);
        return EXIT_USAGE;
    }
    args[n++] = "python3";
    args[n++] = script;
    args[n++] = self;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config_path = argv[i] + 9;
        else
            args[n++] = argv[i];
    }
    args[n] = NULL;
    if (config_path == NULL) {
        fprintf(stderr, "zetl bench: --config FILE is required\n");
        return EXIT_USAGE;
    }
    if (zetl_config_load(config_path, &cfg, &eb) != ZETL_OK) {
        fprintf(stderr, "zetl: %s\n", eb.msg);
        return EXIT_USAGE;
    }
    setenv("ZETLBENCH_SOURCE_DSN", cfg->source.dsn, 1);
    if (cfg->warehouse.kind == ZETL_WH_POSTGRES)
        setenv("ZETLBENCH_WAREHOUSE_DSN", cfg->warehouse.dsn, 1);
    zetl_config_free(cfg);
    execvp("python3", args);
    fprintf(stderr, "zetl bench: could not run python3: %s\n", strerror(errno));
    return EXIT_JOB;
}

/*
 * Prints the help of cmd (NULL: the overview) to stdout and returns 0, or
 * names an unknown command or subcommand on stderr and returns EXIT_USAGE.
 */
static int print_help(const char *cmd, const char *sub)
{
    if (cmd == NULL) {
        fputs(zetl_help_usage(), stdout);
        return 0;
    }
    if (zetl_help_print(stdout, cmd, sub))
        return 0;
    if (sub != NULL && zetl_help_known(cmd))
        fprintf(stderr, "zetl help: unknown subcommand \"%s %s\"\n", cmd, sub);
    else
        fprintf(stderr, "zetl: unknown command \"%s\"\n", cmd);
    fputs("Try \"zetl help\" for the list of commands.\n", stderr);
    return EXIT_USAGE;
}

/* zetl help [COMMAND [SUBCOMMAND]]: argv[1] is "help". */
static int cmd_help(int argc, char **argv)
{
    if (argc > 4 ||
        (argc == 4 && strcmp(argv[2], "tenant") != 0 && strcmp(argv[2], "slots") != 0)) {
        fprintf(stderr, "zetl help: unexpected argument \"%s\"\n", argv[argc - 1]);
        return EXIT_USAGE;
    }
    return print_help(argc >= 3 ? argv[2] : NULL, argc == 4 ? argv[3] : NULL);
}

/* The command line of every command but bench; strings are borrowed from argv. */
struct cli_args {
    const char *cmd; /* NULL when none was given */
    const char *config_path;
    const char *operand;  /* apply-batch DIR, resync TABLE, slots and tenant SUBCOMMAND */
    const char *operand2; /* tenant purge TENANT */
    bool once, rebuild, all;
    const char *from, *to;          /* replay --from, --to as given */
    struct zetl_replay_opts replay; /* the lists are owned (strings copied from argv) */
    struct zetl_load_opts load;
};

/*
 * Reads the command, the options and the operand into *a.  Returns false
 * when main must exit with *rc: after --help or --version, or on a bad
 * option or a surplus argument.
 */
static bool parse_args(int argc, char **argv, struct cli_args *a, int *rc)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"once", no_argument, NULL, 'o'},
        {"rebuild", no_argument, NULL, 'r'},      {"all", no_argument, NULL, 'a'},
        {"from", required_argument, NULL, 'f'},   {"to", required_argument, NULL, 't'},
        {"tenant", required_argument, NULL, 'T'}, {"table", required_argument, NULL, 'X'},
        {"into", required_argument, NULL, 'i'},   {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0}};
    int c;

    if (argc >= 2 && argv[1][0] != '-') {
        a->cmd = argv[1];
        argv++;
        argc--;
    }
    while ((c = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->config_path = optarg;
            break;
        case 'o':
            a->once = true;
            break;
        case 'r':
            a->rebuild = true;
            break;
        case 'a':
            a->all = true;
            break;
        case 'f':
            a->from = optarg;
            break;
        case 't':
            a->to = optarg;
            break;
        case 'T':
            zetl_strlist_add(&a->replay.tenants, optarg);
            break;
        case 'X':
            zetl_strlist_add(&a->replay.tables, optarg);
            break;
        case 'i':
            a->replay.into = optarg;
            break;
        case 'h':
            *rc = print_help(a->cmd, NULL);
            return false;
        case 'V':
            /* zetl --version alone is answered in main; anything with it is a mistake. */
            fputs("zetl: --version takes no other argument (zetl --version)\n", stderr);
            *rc = EXIT_USAGE;
            return false;
        default:
            fputs("Try \"zetl --help\" for more information.\n", stderr);
            *rc = EXIT_USAGE;
            return false;
        }
    }
    /* apply-batch DIR, resync TABLE and slots SUBCOMMAND take one operand. */
    if (a->cmd != NULL &&
        (strcmp(a->cmd, "apply-batch") == 0 || strcmp(a->cmd, "resync") == 0 ||
         strcmp(a->cmd, "slots") == 0 || strcmp(a->cmd, "tenant") == 0) &&
        optind < argc)
        a->operand = argv[optind++];
    if (a->cmd != NULL && strcmp(a->cmd, "tenant") == 0 && optind < argc)
        a->operand2 = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "zetl: unexpected argument \"%s\"\n", argv[optind]);
        *rc = EXIT_USAGE;
        return false;
    }
    return true;
}

/* Reads replay's --from and --to into a->replay; false (said why) when they are not usable. */
static bool check_replay_args(struct cli_args *a)
{
    struct zetl_replay_opts *o = &a->replay;
    const char *const names[2] = {"--from", "--to"};
    const char *const args[2] = {a->from, a->to};
    struct zetl_replay_point *pts[2] = {&o->from, &o->to};

    for (int k = 0; k < 2; k++) {
        if (args[k] != NULL && !zetl_replay_parse_point(args[k], pts[k])) {
            fprintf(stderr,
                    "zetl replay: %s \"%s\": expected an LSN (16/B374D848) or a time "
                    "(2024-03-05 12:34:56[.ffffff][+01[:00]], or RFC 3339)\n",
                    names[k], args[k]);
            return false;
        }
    }
    if (o->from.set && o->to.set && o->from.is_time == o->to.is_time &&
        (o->from.is_time ? o->from.usec > o->to.usec : o->from.lsn > o->to.lsn)) {
        fprintf(stderr, "zetl replay: --from \"%s\" is after --to \"%s\"\n", a->from, a->to);
        return false;
    }
    if (o->into != NULL && !zetl_replay_schema_ok(o->into)) {
        fprintf(stderr, "zetl replay: --into \"%s\": a schema name has 1 to 63 bytes\n", o->into);
        return false;
    }
    for (size_t i = 0; i < o->tenants.n; i++)
        if (o->tenants.items[i][0] == '\0') {
            fprintf(stderr, "zetl replay: --tenant \"\": the tenant is empty\n");
            return false;
        }
    for (size_t i = 0; i < o->tables.n; i++)
        if (o->tables.items[i][0] == '\0') {
            fprintf(stderr, "zetl replay: --table \"\": the table is empty\n");
            return false;
        }
    return true;
}

/* Reads load's --from and --into into a->load; false (said why) when they are not usable. */
static bool check_load_args(struct cli_args *a)
{
    struct zetl_replay_point p;

    a->load.into = a->replay.into;
    if (a->from != NULL) {
        a->load.from_set = true;
        if (strcmp(a->from, "earliest") == 0) {
            a->load.from_earliest = true;
        } else if (zetl_replay_parse_point(a->from, &p) && p.is_time) {
            a->load.from_usec = p.usec;
        } else {
            fprintf(stderr,
                    "zetl load: --from \"%s\": expected earliest or a time (2024-03-05 "
                    "12:34:56[.ffffff][+01[:00]], or RFC 3339)\n",
                    a->from);
            return false;
        }
    }
    if (a->load.into != NULL && !zetl_replay_schema_ok(a->load.into)) {
        fprintf(stderr, "zetl load: --into \"%s\": a schema name has 1 to 63 bytes\n",
                a->load.into);
        return false;
    }
    return true;
}

/* True when the command, its operand and its options fit together; else says why on stderr. */
static bool check_args(struct cli_args *a)
{
    const char *cmd = a->cmd;
    const char *operand = a->operand;

    if (cmd == NULL) {
        fputs(zetl_help_usage(), stderr);
        return false;
    }
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "verify") != 0 && strcmp(cmd, "check") != 0 &&
        strcmp(cmd, "apply-batch") != 0 && strcmp(cmd, "resync") != 0 &&
        strcmp(cmd, "slots") != 0 && strcmp(cmd, "replay") != 0 && strcmp(cmd, "tenant") != 0 &&
        strcmp(cmd, "snapshot") != 0 && strcmp(cmd, "load") != 0) {
        fprintf(stderr, "zetl: unknown command \"%s\"\nTry \"zetl --help\" for more information.\n",
                cmd);
        return false;
    }
    if (a->once && strcmp(cmd, "run") != 0) {
        fprintf(stderr, "zetl: --once only applies to \"zetl run\"\n");
        return false;
    }
    if (strcmp(cmd, "apply-batch") == 0 && operand == NULL) {
        fprintf(stderr, "zetl apply-batch: the batch directory is missing\n");
        return false;
    }
    if (strcmp(cmd, "resync") == 0 && (operand == NULL) == !a->all) {
        fprintf(stderr, "zetl resync: name one table, or --all\n");
        return false;
    }
    if ((a->rebuild || a->all) && strcmp(cmd, "resync") != 0) {
        fprintf(stderr, "zetl: --rebuild and --all only apply to \"zetl resync\"\n");
        return false;
    }
    if (strcmp(cmd, "slots") == 0 && (operand == NULL || (strcmp(operand, "drop-unused") != 0 &&
                                                          strcmp(operand, "regroup") != 0))) {
        fprintf(stderr, "zetl slots: expected drop-unused or regroup\n");
        return false;
    }
    if (strcmp(cmd, "tenant") == 0 && (operand == NULL || strcmp(operand, "purge") != 0)) {
        fprintf(stderr, "zetl tenant: expected purge\n");
        return false;
    }
    if (strcmp(cmd, "tenant") == 0 && (a->operand2 == NULL || a->operand2[0] == '\0')) {
        fprintf(stderr, "zetl tenant purge: the tenant is missing\n");
        return false;
    }
    if (strcmp(cmd, "load") == 0) {
        if (a->to != NULL) {
            fprintf(stderr, "zetl load: --to only applies to \"zetl replay\"\n");
            return false;
        }
        if (!check_load_args(a))
            return false;
    } else if (strcmp(cmd, "replay") != 0 && (a->from || a->to || a->replay.into)) {
        fprintf(stderr,
                "zetl: --from, --to and --into only apply to \"zetl replay\" (and --from, --into "
                "to \"zetl load\")\n");
        return false;
    }
    if (strcmp(cmd, "replay") != 0 && strcmp(cmd, "snapshot") != 0 &&
        (a->replay.tenants.n || a->replay.tables.n)) {
        fprintf(stderr,
                "zetl: --tenant and --table only apply to \"zetl replay\" and \"zetl snapshot\"\n");
        return false;
    }
    if (strcmp(cmd, "replay") == 0 && !check_replay_args(a))
        return false;
    if (a->config_path == NULL) {
        fprintf(stderr, "zetl %s: --config FILE is required\n", cmd);
        return false;
    }
    return true;
}

/* SIGINT and SIGTERM stop the streams gracefully; a closed socket is an error, not a signal. */
static void install_signal_handlers(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Runs the checked command `a` with cfg; returns the exit code. */
static int run_command(const struct zetl_config *cfg, const struct cli_args *a)
{
    if (strcmp(a->cmd, "run") == 0)
        return cmd_run(cfg, a->once, NULL);
    if (strcmp(a->cmd, "snapshot") == 0)
        return cmd_snapshot(cfg, &a->replay.tenants, &a->replay.tables);
    if (strcmp(a->cmd, "check") == 0)
        return zetl_cmd_check(cfg);
    if (strcmp(a->cmd, "slots") == 0)
        return zetl_cmd_slots(cfg, a->operand);
    if (strcmp(a->cmd, "apply-batch") == 0)
        return cmd_apply_batch(cfg, a->operand);
    if (strcmp(a->cmd, "resync") == 0)
        return cmd_resync(cfg, a->operand, a->rebuild);
    if (strcmp(a->cmd, "replay") == 0)
        return zetl_cmd_replay(cfg, &a->replay);
    if (strcmp(a->cmd, "tenant") == 0)
        return zetl_cmd_tenant_purge(cfg, a->operand2);
    if (strcmp(a->cmd, "load") == 0)
        return zetl_cmd_load(cfg, &a->load);
    return zetl_cmd_verify(cfg);
}

int main(int argc, char **argv)
{
    struct cli_args a = {0};
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb;
    int rc;

    if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf("zetl %s\n", ZETL_VERSION);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "help") == 0)
        return cmd_help(argc, argv);
    /* bench passes its own options through to the harness. */
    if (argc >= 2 && strcmp(argv[1], "bench") == 0)
        return cmd_bench(argc, argv);
    /*
     * Archive, spool, spill and snapshot files hold row data: whatever the
     * caller's umask, they are created 0600 and their directories 0700 (the
     * umask takes the group and other bits off the 0644/0755 the code asks
     * for; one place instead of every open and mkdir).  bench is left
     * alone: it runs a Python harness that shares files with PostgreSQL
     * servers running as another user, and the zetl processes it starts set
     * this themselves.
     */
    umask(077);
    if (!parse_args(argc, argv, &a, &rc))
        goto done;
    rc = EXIT_USAGE;
    if (!check_args(&a))
        goto done;
    if (zetl_config_load(a.config_path, &cfg, &eb) != ZETL_OK) {
        fprintf(stderr, "zetl: %s\n", eb.msg);
        goto done;
    }
    if (cfg->log_level && getenv("ZETL_LOG_LEVEL") == NULL)
        zetl_log_set_level((enum zetl_log_level)zetl_log_parse_level(cfg->log_level));
    if (cfg->log_json && getenv("ZETL_LOG_FORMAT") == NULL)
        zetl_log_set_format(ZETL_LOG_JSON);

    install_signal_handlers();
    rc = run_command(cfg, &a);
    zetl_config_free(cfg);
done:
    zetl_strlist_release(&a.replay.tenants);
    zetl_strlist_release(&a.replay.tables);
    return rc;
}
