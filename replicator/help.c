/*
 * The command line's help texts.  Kept apart from main.c so the option
 * handling stays readable; every page must stay true to what main.c and the
 * command accept (tests/integration/test_cli.py runs each one).
 */
#include "replicator/help.h"

#include <string.h>

static const char usage_text[] =
    "zetl - streaming change data capture from PostgreSQL tenant schemas\n"
    "\n"
    "Usage:\n"
    "  zetl run    --config FILE [--once]   stream changes into the archive (and warehouse)\n"
    "                                        until SIGTERM/SIGINT; with --once, catch up to\n"
    "                                        the source's WAL position at start, then exit\n"
    "  zetl verify --config FILE            compare source and warehouse per tenant and table\n"
    "  zetl check  --config FILE            preflight: replication role, wal_level, privileges,\n"
    "                                        replica identity, slots\n"
    "  zetl apply-batch --config FILE DIR   apply one archived batch directory to the warehouse\n"
    "                                        (replay; batches at or below the offset are skipped)\n"
    "  zetl replay --config FILE [--from LSN|TIME] [--to LSN|TIME] [--tenant T]...\n"
    "              [--table X]... [--into SCHEMA]\n"
    "                                        apply the archived batches of every stream to the\n"
    "                                        warehouse (or into SCHEMA, created if missing);\n"
    "                                        what the schema's offsets hold is skipped; --tenant,\n"
    "                                        --table and --from need --into and record nothing\n"
    "                                        (LSN: 16/B374D848; TIME: 2024-03-05 12:34:56+01,\n"
    "                                        UTC without a zone; see docs/replay.md)\n"
    "  zetl load --config FILE [--from earliest|TIME] [--into SCHEMA]\n"
    "                                        consume the Kafka change topics into the\n"
    "                                        warehouse (or rebuild SCHEMA from Kafka) until\n"
    "                                        SIGTERM/SIGINT; see docs/kafka.md\n"
    "  zetl tenant purge --config FILE TENANT\n"
    "                                        delete every row of TENANT from the warehouse\n"
    "                                        tables, in one transaction\n"
    "  zetl resync --config FILE [--rebuild] (TABLE | --all)\n"
    "                                        re-apply every archived batch's rows of TABLE (or\n"
    "                                        of every table) to the warehouse after a stopped\n"
    "                                        table was fixed; --rebuild deletes the table's\n"
    "                                        rows first and rebuilds it from the archive\n"
    "                                        (stop zetl run first; see docs/warehouse.md)\n"
    "  zetl snapshot --config FILE [--tenant T]... [--table X]...\n"
    "                                        copy those tables' rows again (all tenants and\n"
    "                                        tables when none is named) while changes keep\n"
    "                                        streaming; a running zetl run does it, else this\n"
    "                                        command does and exits when they are copied\n"
    "  zetl slots drop-unused --config FILE\n"
    "                                        drop the zetl replication slots and publications\n"
    "                                        the configuration no longer uses (they hold WAL)\n"
    "  zetl slots regroup --config FILE     after a change of source.slot_groups or tenant\n"
    "                                        patterns: re-spread the tenant schemas over the\n"
    "                                        slots (see docs/operations.md first)\n"
    "  zetl bench  --config FILE [WORKLOAD...] [OPTION...]\n"
    "                                        run benchmark workloads against the config's source\n"
    "                                        (and warehouse); options: bench/README.md\n"
    "  zetl help [COMMAND]                  this overview, or the help of one command\n"
    "  zetl COMMAND --help                  the help of one command\n"
    "  zetl --version                       print \"zetl VERSION\"\n"
    "\n"
    "A commented configuration with every key: zetl.example.yaml; reference: docs/config.md.\n"
    "\n"
    "Environment:\n"
    "  ZETL_SOURCE_DSN      overrides source.dsn (keep passwords out of the config file)\n"
    "  ZETL_SOURCE_DSN_FILE\n"
    "                       file holding the source DSN (Docker/Kubernetes secrets); must\n"
    "                       not be accessible by other users; overrides source.dsn[_file]\n"
    "  ZETL_WAREHOUSE_DSN   overrides warehouse.dsn\n"
    "  ZETL_WAREHOUSE_DSN_FILE\n"
    "                       file holding the warehouse DSN, likewise\n"
    "  ZETL_MASK_SALT       salt for transforms.clean rules with mask: sha256\n"
    "  ZETL_LOG_LEVEL       debug | info | log | warning | error (default log)\n"
    "\n"
    "Exit status: 0 ok, 1 the job failed, 2 bad usage or invalid config.\n";

/* One help page: NULL-free strings, each option line already indented. */
struct help_page {
    const char *cmd;
    const char *synopsis; /* one or more "zetl ..." lines */
    const char *options;  /* the command's own options, without --config and --help */
    const char *text;     /* one paragraph */
    const char *exits;    /* what 0 and 1 mean for it */
};

static const struct help_page pages[] = {
    {"run", "zetl run --config FILE [--once]\n",
     "  --once               catch up to the source's WAL position at start, apply, exit 0\n",
     "Streams the changes of the tenant schemas (source.tenants.schemas) from one logical\n"
     "replication slot per slot group (named <source.slot>_<N>: zetl_0, zetl_1, ...) into\n"
     "the archive and the warehouse, until SIGTERM or SIGINT. At the first start it creates\n"
     "the publications and slots and, with source.snapshot: initial, copies the rows the\n"
     "tables already hold. The slot advances only past transactions every sink has made\n"
     "durable, so a restart resumes without loss or duplicates. Run zetl check first.\n",
     "0 stopped cleanly (or caught up with --once), 1 the job failed"},
    {"verify", "zetl verify --config FILE\n", "",
     "Compares the source and the warehouse per tenant and table: the row count and an\n"
     "order-independent hash of the rows. It first waits until the warehouse has applied\n"
     "every stream up to the source's WAL position at start (a stream no zetl reads is\n"
     "compared as the warehouse holds it), then prints a diff report for the tables that differ. "
     "Needs a warehouse section.\n",
     "0 source and warehouse are equal, 1 they differ or the comparison failed"},
    {"check", "zetl check --config FILE\n", "",
     "Preflight of the source and the warehouse, one line per finding (ok, warning, error),\n"
     "changing nothing: first that the source role may replicate (the REPLICATION\n"
     "attribute, or membership in rds_replication on Aurora/RDS), then wal_level, free\n"
     "replication slots, the tenant schemas found, SELECT privilege, primary keys and\n"
     "replica identity of every selected table, the zetl slots and publications against\n"
     "the configuration (lost slots, moved tenants, unused slots and the WAL they hold),\n"
     "and a connection to the warehouse.\n",
     "0 nothing blocks replication (warnings allowed), 1 at least one error"},
    {"apply-batch", "zetl apply-batch --config FILE DIR\n", "",
     "Applies one archived batch directory (<archive>/<stream>/<first_lsn>-<last_lsn>) to\n"
     "the warehouse in one transaction, with its offsets row; a batch at or below the\n"
     "stream's recorded offset is skipped. Needs a warehouse section.\n",
     "0 applied or skipped, 1 the apply failed"},
    {"replay",
     "zetl replay --config FILE [--from LSN|TIME] [--to LSN|TIME] [--tenant T]...\n"
     "            [--table X]... [--into SCHEMA]\n",
     "  --from LSN|TIME      start at this transaction (inclusive; needs --into)\n"
     "  --to LSN|TIME        stop after this transaction (inclusive)\n"
     "  --tenant T           only this tenant's rows; repeatable (needs --into)\n"
     "  --table X            only this table's rows; repeatable (needs --into)\n"
     "  --into SCHEMA        apply into SCHEMA (created if missing) instead of\n"
     "                       warehouse.schema\n",
     "Applies the archived batches of every stream, oldest first, to the warehouse (or into\n"
     "SCHEMA); what that schema's offsets already hold is skipped, so running it again goes\n"
     "on where it stopped. A filtered replay (--tenant, --table or --from) records no\n"
     "offsets and must go --into a schema other than warehouse.schema. An LSN is written\n"
     "16/B374D848; a TIME 2024-03-05 12:34:56[.ffffff][+01[:00]] or RFC 3339, UTC without a\n"
     "zone; both bounds compare with the source's commits, so the cut is transaction-exact.\n"
     "Needs an archive and a warehouse section; see docs/replay.md.\n",
     "0 every batch applied or skipped, 1 the replay failed (run it again to go on)"},
    {"snapshot", "zetl snapshot --config FILE [--tenant T]... [--table X]...\n",
     "  --tenant T           copy only this tenant's tables; repeatable\n"
     "  --table X            copy only this table (in every selected tenant); repeatable\n",
     "Copies the rows of those tables again (every tenant and table when none is named)\n"
     "while their changes keep streaming, consistently with the stream. When a zetl run\n"
     "holds buffer.dir, it takes the request and this command waits until the tables are\n"
     "copied; otherwise this command runs the streams itself until they are copied and\n"
     "caught up. Refused with source.snapshot: never; see docs/snapshots.md.\n",
     "0 the tables are copied, 1 the copy failed or was interrupted"},
    {"load", "zetl load --config FILE [--from earliest|TIME] [--into SCHEMA]\n",
     "  --from earliest|TIME where partitions start that have no offset stored in the\n"
     "                       warehouse yet (default: earliest)\n"
     "  --into SCHEMA        load into SCHEMA (created if missing) instead of\n"
     "                       warehouse.schema, in a consumer group of its own\n",
     "Consumes the change topics that zetl run publishes (kafka.topic_prefix) in the\n"
     "consumer group kafka.group, read_committed, and applies them to the warehouse with\n"
     "the same merge as zetl run. Each partition's offset is stored in the warehouse in the\n"
     "transaction that applies its messages, so a change is applied once even across\n"
     "crashes and rebalances; several loaders in one group share the partitions. Runs\n"
     "until SIGTERM/SIGINT. Needs a kafka section (format avro) and a warehouse section;\n"
     "see docs/kafka.md.\n",
     "0 stopped by a signal, 1 the load failed"},
    {"tenant", "zetl tenant purge --config FILE TENANT\n", "",
     "Deletes every row of TENANT (its tenant column value, the source schema name) from\n"
     "the warehouse tables, in one warehouse transaction. The source and the archive are\n"
     "not touched. Needs a warehouse section.\n",
     "0 purged, 1 the purge failed"},
    {"resync", "zetl resync --config FILE [--rebuild] (TABLE | --all)\n",
     "  --all                every table instead of one TABLE\n"
     "  --rebuild            delete the table's rows first, then rebuild it from the archive\n",
     "Re-applies every archived batch's rows of TABLE (or of every table) to the warehouse,\n"
     "oldest first, after a table stopped by an incompatible change was fixed. It takes\n"
     "buffer.dir's lock: stop zetl run first. Needs an archive and a warehouse section;\n"
     "see docs/warehouse.md.\n",
     "0 resynced, 1 the resync failed"},
    {"slots",
     "zetl slots drop-unused --config FILE\n"
     "zetl slots regroup --config FILE\n",
     "",
     "drop-unused drops the zetl replication slots and publications (<source.slot>_<N>)\n"
     "that the configuration no longer uses, since they hold WAL on the source; it refuses\n"
     "while tenants would move between slot groups. regroup, after a change of\n"
     "source.slot_groups or of the tenant patterns, re-spreads the tenant schemas over the\n"
     "slots; drain with the old configuration first (see docs/operations.md).\n",
     "0 done (or nothing to do), 1 it failed or refused"},
    {"bench", "zetl bench --config FILE [WORKLOAD...] [OPTION...]\n", "",
     "Runs benchmark workloads (bench/zetlbench.py, never linked into the daemon) against\n"
     "the configuration's source and, when it is a postgres warehouse, its warehouse; the\n"
     "DSNs are passed through the environment. Every other argument goes to the harness:\n"
     "zetl bench --help also prints the harness's own workloads and options when it finds\n"
     "it (ZETL_BENCH_DIR names the bench directory of the zetl source tree); they are\n"
     "described in bench/README.md.\n",
     "0 the workloads ran, otherwise the harness's status"},
    {"help", "zetl help [COMMAND]\n", "",
     "Prints the overview of every command, or the help of COMMAND (the same as\n"
     "zetl COMMAND --help).\n",
     "0, or 2 for an unknown command"},
};

const char *zetl_help_usage(void)
{
    return usage_text;
}

static const struct help_page *find_page(const char *cmd)
{
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++)
        if (strcmp(pages[i].cmd, cmd) == 0)
            return &pages[i];
    return NULL;
}

bool zetl_help_known(const char *cmd)
{
    return find_page(cmd) != NULL;
}

bool zetl_help_print(FILE *out, const char *cmd, const char *sub)
{
    const struct help_page *p = find_page(cmd);
    bool takes_config = strcmp(cmd, "help") != 0;

    if (p == NULL)
        return false;
    if (sub != NULL && !((strcmp(cmd, "tenant") == 0 && strcmp(sub, "purge") == 0) ||
                         (strcmp(cmd, "slots") == 0 &&
                          (strcmp(sub, "drop-unused") == 0 || strcmp(sub, "regroup") == 0))))
        return false;
    fputs("Usage:\n", out);
    for (const char *s = p->synopsis; *s;) {
        size_t n = strcspn(s, "\n");
        fprintf(out, "  %.*s\n", (int)n, s);
        s += n + (s[n] == '\n');
    }
    fprintf(out, "\n%s\nOptions:\n", p->text);
    if (takes_config)
        fputs("  -c, --config FILE    the configuration file (every key: zetl.example.yaml,\n"
              "                       docs/config.md)\n",
              out);
    fputs(p->options, out);
    fputs("  -h, --help           print this help and exit\n", out);
    fprintf(out, "\nExit status: %s, 2 bad usage or invalid config.\n", p->exits);
    return true;
}
