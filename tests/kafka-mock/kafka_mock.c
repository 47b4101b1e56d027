/*
 * kafka-mock: librdkafka's in-process mock cluster (rdkafka_mock.h) as a
 * standalone broker for tests, so the Kafka sink's integration tests need no
 * JVM.  It prints the bootstrap servers as the first line of stdout, then
 * takes one control command per line on stdin (fault injection at run time)
 * and answers each with exactly one line, "ok" or "error: <reason>".  Only
 * SIGTERM or SIGINT stop it: a test may close stdin and keep the broker.
 *
 * What librdkafka 2.0.2's mock does not do, and tests must not rely on:
 *
 * - Transactions are accepted (InitProducerId, AddPartitionsToTxn, EndTxn all
 *   answer without error) but no transaction markers (control records) are
 *   written and Fetch ignores IsolationLevel: LastStableOffset is always the
 *   high watermark and the aborted-transactions list is always empty.  A
 *   read_committed consumer therefore also sees the messages of aborted and
 *   of still-open transactions, and offsets have no gaps for markers.
 *   Tests of transactional output must check commit/abort through the
 *   producer's API results, not through a read_committed consumer.
 *
 * - Every Metadata request that names an unknown topic creates it: the mock
 *   speaks Metadata v0-2 only, which has no AllowAutoTopicCreation flag, so
 *   a client's allow.auto.create.topics=false changes nothing (kcat -L -t T,
 *   list_topics(T), a consumer subscribing to T all create T).  Only the
 *   all-topics listing is side-effect free.
 *
 * - Auto-created topics always get 4 partitions: the default is a field of
 *   the cluster that no public function sets.  --partitions therefore only
 *   sets the partition count of topics created by this program (--topic and
 *   create-topic without a count); create a topic before any client names
 *   it to give it another count.  The replication factor is always
 *   min(3, brokers), whatever is asked.
 *
 * - A partition keeps only its newest 5 MB (and at most 100000 produced
 *   batches): older batches are dropped and the log start offset moves, so
 *   a reader from the beginning gets less, without an error.  A test that
 *   reads everything back must stay under that per partition.
 *
 * - "leader"/"follower" on a topic that does not exist yet create it with
 *   PARTITION + 1 partitions, "topic-error" with 4 (the mock's own
 *   behaviour); create the topic first.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define KMOCK_MAX_BROKERS 32
#define KMOCK_MAX_PARTITIONS 10000
/* A control line longer than this is refused whole (the rest is skipped up to
 * its newline) rather than split into several commands. */
#define KMOCK_LINE_MAX 4096
#define KMOCK_MAX_ARGS 64
#define KMOCK_MAX_TOPICS 64

/* Kafka protocol API keys by name (rdkafka_protocol.h of 2.0.2, which is not
 * an installed header); index = ApiKey. */
static const char *const kmock_api_names[] = {
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "LeaderAndIsr",
    "StopReplica",
    "UpdateMetadata",
    "ControlledShutdown",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "SaslHandshake",
    "ApiVersion",
    "CreateTopics",
    "DeleteTopics",
    "DeleteRecords",
    "InitProducerId",
    "OffsetForLeaderEpoch",
    "AddPartitionsToTxn",
    "AddOffsetsToTxn",
    "EndTxn",
    "WriteTxnMarkers",
    "TxnOffsetCommit",
    "DescribeAcls",
    "CreateAcls",
    "DeleteAcls",
    "DescribeConfigs",
    "AlterConfigs",
    "AlterReplicaLogDirs",
    "DescribeLogDirs",
    "SaslAuthenticate",
    "CreatePartitions",
    "CreateDelegationToken",
    "RenewDelegationToken",
    "ExpireDelegationToken",
    "DescribeDelegationToken",
    "DeleteGroups",
    "ElectLeaders",
    "IncrementalAlterConfigs",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "OffsetDelete",
    "DescribeClientQuotas",
    "AlterClientQuotas",
    "DescribeUserScramCredentials",
    "AlterUserScramCredentials",
    "Vote",
    "BeginQuorumEpoch",
    "EndQuorumEpoch",
    "DescribeQuorum",
    "AlterIsr",
    "UpdateFeatures",
    "Envelope",
};
#define KMOCK_API_CNT ((int)(sizeof(kmock_api_names) / sizeof(kmock_api_names[0])))

struct kmock {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mcluster;
    int brokers;
    int partitions;
};

struct kmock_cmd {
    const char *name;
    int min_args; /* not counting the command name */
    int max_args; /* -1: no limit */
    const char *usage;
    /* Returns 0 and leaves err empty on success; otherwise fills err. */
    int (*run)(struct kmock *km, int argc, char **argv, char *err, size_t errsize);
};

static int kmock_fail(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int kmock_fail(char *err, size_t errsize, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- argument parsing --------------------------------------------------- */

static int kmock_parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* A broker id of this cluster (1..brokers), or "all" (-1) when all_ok. */
static int kmock_parse_broker(struct kmock *km, const char *s, int all_ok, int32_t *out, char *err,
                              size_t errsize)
{
    long v;

    if (all_ok && strcmp(s, "all") == 0) {
        *out = -1;
        return 0;
    }
    if (kmock_parse_int(s, 1, km->brokers, &v) != 0)
        return kmock_fail(err, errsize, "bad broker id \"%s\" (brokers are 1..%d%s)", s,
                          km->brokers, all_ok ? " or all" : "");
    *out = (int32_t)v;
    return 0;
}

static int kmock_parse_api(const char *s, int16_t *out, char *err, size_t errsize)
{
    long v;
    int i;

    if (kmock_parse_int(s, 0, KMOCK_API_CNT - 1, &v) == 0) {
        *out = (int16_t)v;
        return 0;
    }
    /* Kafka's own name of key 18; librdkafka says ApiVersion. */
    if (strcasecmp(s, "ApiVersions") == 0)
        s = "ApiVersion";
    for (i = 0; i < KMOCK_API_CNT; i++) {
        if (strcasecmp(s, kmock_api_names[i]) == 0) {
            *out = (int16_t)i;
            return 0;
        }
    }
    return kmock_fail(err, errsize,
                      "unknown api key \"%s\" (a number 0..%d or a name like Produce)", s,
                      KMOCK_API_CNT - 1);
}

/* An error code as a number or as librdkafka names it, with or without the
 * RD_KAFKA_RESP_ERR_ prefix: "NOT_COORDINATOR", "16", "_TRANSPORT". */
static int kmock_parse_errcode(const char *s, rd_kafka_resp_err_t *out, char *err, size_t errsize)
{
    const struct rd_kafka_err_desc *descs;
    size_t cnt, i;
    long v;

    if (kmock_parse_int(s, INT16_MIN, INT16_MAX, &v) == 0) {
        *out = (rd_kafka_resp_err_t)v;
        return 0;
    }
    if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
        s += 18;
    rd_kafka_get_err_descs(&descs, &cnt);
    for (i = 0; i < cnt; i++) {
        if (descs[i].name != NULL && strcasecmp(s, descs[i].name) == 0) {
            *out = descs[i].code;
            return 0;
        }
    }
    return kmock_fail(err, errsize,
                      "unknown error code \"%s\" (a number or a name like NOT_COORDINATOR)", s);
}

static int kmock_rdkafka_fail(rd_kafka_resp_err_t rerr, char *err, size_t errsize, const char *what)
{
    return kmock_fail(err, errsize, "%s: %s (%s)", what, rd_kafka_err2str(rerr),
                      rd_kafka_err2name(rerr));
}

/* ---- control commands --------------------------------------------------- */

static int kmock_cmd_ping(struct kmock *km, int argc, char **argv, char *err, size_t errsize)
{
    (void)km, (void)argc, (void)argv, (void)err, (void)errsize;
    return 0;
}

static int kmock_topic_create(struct kmock *km, const char *topic, int partitions, char *err,
                              size_t errsize)
{
    rd_kafka_resp_err_t rerr;

    /* The replication factor argument is ignored by the 2.0.2 mock (it always
     * uses min(3, brokers)); pass that so the call says what happens. */
    rerr = rd_kafka_mock_topic_create(km->mcluster, topic, partitions,
                                      km->brokers < 3 ? km->brokers : 3);
    if (rerr)
        return kmock_rdkafka_fail(rerr, err, errsize, topic);
    return 0;
}

static int kmock_cmd_create_topic(struct kmock *km, int argc, char **argv, char *err,
                                  size_t errsize)
{
    long partitions = km->partitions;

    if (argc > 2 && kmock_parse_int(argv[2], 1, KMOCK_MAX_PARTITIONS, &partitions) != 0)
        return kmock_fail(err, errsize, "bad partition count \"%s\" (1..%d)", argv[2],
                          KMOCK_MAX_PARTITIONS);
    return kmock_topic_create(km, argv[1], (int)partitions, err, errsize);
}

static int kmock_cmd_broker_updown(struct kmock *km, int argc, char **argv, char *err,
                                   size_t errsize)
{
    rd_kafka_resp_err_t rerr;
    int32_t id = 0;

    (void)argc;
    if (kmock_parse_broker(km, argv[1], 1, &id, err, errsize) != 0)
        return -1;
    /* Both wait for the mock thread: "ok" means connections are already
     * closed (down) or the listener is accepting again (up). */
    if (strcmp(argv[0], "broker-down") == 0)
        rerr = rd_kafka_mock_broker_set_down(km->mcluster, id);
    else
        rerr = rd_kafka_mock_broker_set_up(km->mcluster, id);
    if (rerr)
        return kmock_rdkafka_fail(rerr, err, errsize, argv[1]);
    return 0;
}

static int kmock_cmd_partition_broker(struct kmock *km, int argc, char **argv, char *err,
                                      size_t errsize)
{
    rd_kafka_resp_err_t rerr;
    long partition;
    int32_t id = 0;

    (void)argc;
    if (kmock_parse_int(argv[2], 0, KMOCK_MAX_PARTITIONS - 1, &partition) != 0)
        return kmock_fail(err, errsize, "bad partition \"%s\"", argv[2]);
    /* -1: leaderless (leader) or no preferred follower (follower). */
    if (strcmp(argv[3], "-1") == 0)
        id = -1;
    else if (kmock_parse_broker(km, argv[3], 0, &id, err, errsize) != 0)
        return -1;
    if (strcmp(argv[0], "leader") == 0)
        rerr = rd_kafka_mock_partition_set_leader(km->mcluster, argv[1], (int32_t)partition, id);
    else
        rerr = rd_kafka_mock_partition_set_follower(km->mcluster, argv[1], (int32_t)partition, id);
    if (rerr)
        return kmock_rdkafka_fail(rerr, err, errsize, argv[1]);
    return 0;
}

static int kmock_cmd_push_errors(struct kmock *km, int argc, char **argv, char *err, size_t errsize)
{
    rd_kafka_resp_err_t errs[KMOCK_MAX_ARGS];
    int16_t api;
    int i;

    if (kmock_parse_api(argv[1], &api, err, errsize) != 0)
        return -1;
    for (i = 2; i < argc; i++) {
        if (kmock_parse_errcode(argv[i], &errs[i - 2], err, errsize) != 0)
            return -1;
    }
    rd_kafka_mock_push_request_errors_array(km->mcluster, api, (size_t)(argc - 2), errs);
    return 0;
}

/* broker-errors BROKER API ERR[@RTT_MS]...: errors (with a delay of the
 * response) for requests that reach one broker only. */
static int kmock_cmd_broker_errors(struct kmock *km, int argc, char **argv, char *err,
                                   size_t errsize)
{
    rd_kafka_resp_err_t codes[KMOCK_MAX_ARGS], rerr;
    long rtts[KMOCK_MAX_ARGS];
    int32_t id = 0;
    int16_t api;
    char *at;
    int i, n = 0;

    if (kmock_parse_broker(km, argv[1], 0, &id, err, errsize) != 0 ||
        kmock_parse_api(argv[2], &api, err, errsize) != 0)
        return -1;
    /* Parse every word before pushing any, so a refused command changes
     * nothing. */
    for (i = 3; i < argc; i++, n++) {
        rtts[n] = 0;
        at = strchr(argv[i], '@');
        if (at != NULL) {
            *at = '\0';
            if (kmock_parse_int(at + 1, 0, 3600 * 1000, &rtts[n]) != 0)
                return kmock_fail(err, errsize, "bad rtt \"%s\" after %s (milliseconds)", at + 1,
                                  argv[i]);
        }
        if (kmock_parse_errcode(argv[i], &codes[n], err, errsize) != 0)
            return -1;
    }
    for (i = 0; i < n; i++) {
        rerr = rd_kafka_mock_broker_push_request_error_rtts(km->mcluster, id, api, 1, codes[i],
                                                            (int)rtts[i]);
        if (rerr)
            return kmock_rdkafka_fail(rerr, err, errsize, argv[1]);
    }
    return 0;
}

static int kmock_cmd_clear_errors(struct kmock *km, int argc, char **argv, char *err,
                                  size_t errsize)
{
    int16_t api;

    (void)argc;
    if (kmock_parse_api(argv[1], &api, err, errsize) != 0)
        return -1;
    rd_kafka_mock_clear_request_errors(km->mcluster, api);
    return 0;
}

static int kmock_cmd_topic_error(struct kmock *km, int argc, char **argv, char *err, size_t errsize)
{
    rd_kafka_resp_err_t code;

    (void)argc;
    if (kmock_parse_errcode(argv[2], &code, err, errsize) != 0)
        return -1;
    rd_kafka_mock_topic_set_error(km->mcluster, argv[1], code);
    return 0;
}

static int kmock_cmd_rtt(struct kmock *km, int argc, char **argv, char *err, size_t errsize)
{
    rd_kafka_resp_err_t rerr;
    int32_t id = 0;
    long ms;

    (void)argc;
    if (kmock_parse_broker(km, argv[1], 1, &id, err, errsize) != 0)
        return -1;
    if (kmock_parse_int(argv[2], 0, 3600 * 1000, &ms) != 0)
        return kmock_fail(err, errsize, "bad rtt \"%s\" (milliseconds)", argv[2]);
    rerr = rd_kafka_mock_broker_set_rtt(km->mcluster, id, (int)ms);
    if (rerr)
        return kmock_rdkafka_fail(rerr, err, errsize, argv[1]);
    return 0;
}

static int kmock_cmd_coordinator(struct kmock *km, int argc, char **argv, char *err, size_t errsize)
{
    rd_kafka_resp_err_t rerr;
    const char *type;
    int32_t id = 0;

    (void)argc;
    /* The mock's own names are "transaction" and "group". */
    if (strcmp(argv[1], "txn") == 0 || strcmp(argv[1], "transaction") == 0)
        type = "transaction";
    else if (strcmp(argv[1], "group") == 0)
        type = "group";
    else
        return kmock_fail(err, errsize, "bad coordinator type \"%s\" (txn or group)", argv[1]);
    if (kmock_parse_broker(km, argv[3], 0, &id, err, errsize) != 0)
        return -1;
    rerr = rd_kafka_mock_coordinator_set(km->mcluster, type, argv[2], id);
    if (rerr)
        return kmock_rdkafka_fail(rerr, err, errsize, argv[2]);
    return 0;
}

static int kmock_cmd_apiversion(struct kmock *km, int argc, char **argv, char *err, size_t errsize)
{
    rd_kafka_resp_err_t rerr;
    long lo, hi;
    int16_t api;

    (void)argc;
    if (kmock_parse_api(argv[1], &api, err, errsize) != 0)
        return -1;
    if (kmock_parse_int(argv[2], -1, INT16_MAX, &lo) != 0 ||
        kmock_parse_int(argv[3], -1, INT16_MAX, &hi) != 0)
        return kmock_fail(err, errsize, "bad version range \"%s %s\"", argv[2], argv[3]);
    rerr = rd_kafka_mock_set_apiversion(km->mcluster, api, (int16_t)lo, (int16_t)hi);
    if (rerr)
        return kmock_rdkafka_fail(rerr, err, errsize, argv[1]);
    return 0;
}

static const struct kmock_cmd kmock_cmds[] = {
    {"ping", 0, 0, "ping", kmock_cmd_ping},
    {"create-topic", 1, 2, "create-topic TOPIC [PARTITIONS]", kmock_cmd_create_topic},
    {"broker-down", 1, 1, "broker-down BROKER_ID|all", kmock_cmd_broker_updown},
    {"broker-up", 1, 1, "broker-up BROKER_ID|all", kmock_cmd_broker_updown},
    {"leader", 3, 3, "leader TOPIC PARTITION BROKER_ID|-1", kmock_cmd_partition_broker},
    {"follower", 3, 3, "follower TOPIC PARTITION BROKER_ID|-1", kmock_cmd_partition_broker},
    {"push-errors", 2, KMOCK_MAX_ARGS - 2, "push-errors API_KEY ERRCODE...", kmock_cmd_push_errors},
    {"broker-errors", 3, KMOCK_MAX_ARGS - 3, "broker-errors BROKER_ID API_KEY ERRCODE[@RTT_MS]...",
     kmock_cmd_broker_errors},
    {"clear-errors", 1, 1, "clear-errors API_KEY", kmock_cmd_clear_errors},
    {"topic-error", 2, 2, "topic-error TOPIC ERRCODE", kmock_cmd_topic_error},
    {"rtt", 2, 2, "rtt BROKER_ID|all MS", kmock_cmd_rtt},
    {"coordinator", 3, 3, "coordinator txn|group KEY BROKER_ID", kmock_cmd_coordinator},
    {"apiversion", 3, 3, "apiversion API_KEY MIN MAX", kmock_cmd_apiversion},
};
#define KMOCK_CMD_CNT ((int)(sizeof(kmock_cmds) / sizeof(kmock_cmds[0])))

/* Runs one control line; the reply is one line on stdout. */
static void kmock_control_line(struct kmock *km, char *line)
{
    char *argv[KMOCK_MAX_ARGS];
    char err[512];
    char *save = NULL, *tok;
    int argc = 0, i;
    const struct kmock_cmd *cmd = NULL;

    err[0] = '\0';
    for (tok = strtok_r(line, " \t\r", &save); tok != NULL; tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == KMOCK_MAX_ARGS) {
            printf("error: more than %d words\n", KMOCK_MAX_ARGS);
            goto done;
        }
        argv[argc++] = tok;
    }
    if (argc == 0) {
        printf("error: empty command\n");
        goto done;
    }
    for (i = 0; i < KMOCK_CMD_CNT; i++) {
        if (strcmp(argv[0], kmock_cmds[i].name) == 0)
            cmd = &kmock_cmds[i];
    }
    if (cmd == NULL) {
        printf("error: unknown command \"%s\"\n", argv[0]);
        goto done;
    }
    if (argc - 1 < cmd->min_args || (cmd->max_args >= 0 && argc - 1 > cmd->max_args)) {
        printf("error: usage: %s\n", cmd->usage);
        goto done;
    }
    if (cmd->run(km, argc, argv, err, sizeof(err)) != 0)
        printf("error: %s: %s\n", argv[0], err[0] ? err : "failed");
    else
        printf("ok\n");
done:
    fflush(stdout);
}

/* Splits what stdin gave into lines.  Returns 0 at EOF (or a read error:
 * either way no more commands will come), 1 otherwise. */
static int kmock_control_read(struct kmock *km, char *line, size_t *len, int *overlong)
{
    char chunk[1024];
    ssize_t n, i;

    n = read(STDIN_FILENO, chunk, sizeof(chunk));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0) {
        /* A last line without its newline is still a command. */
        if (*len > 0 && !*overlong) {
            line[*len] = '\0';
            kmock_control_line(km, line);
        }
        *len = 0;
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (chunk[i] == '\n') {
            if (*overlong) {
                printf("error: line longer than %d bytes\n", KMOCK_LINE_MAX);
                fflush(stdout);
            } else {
                line[*len] = '\0';
                kmock_control_line(km, line);
            }
            *len = 0;
            *overlong = 0;
        } else if (*len < KMOCK_LINE_MAX) {
            line[(*len)++] = chunk[i];
        } else {
            *overlong = 1;
        }
    }
    return 1;
}

/* Serves stdin commands until a signal; after stdin's EOF, waits for the
 * signal only. */
static void kmock_serve(struct kmock *km, int sfd)
{
    static char line[KMOCK_LINE_MAX + 1];
    struct pollfd pfd[2];
    struct signalfd_siginfo si;
    size_t len = 0;
    int overlong = 0, stdin_open = 1;

    for (;;) {
        pfd[0].fd = sfd;
        pfd[0].events = POLLIN;
        pfd[1].fd = stdin_open ? STDIN_FILENO : -1;
        pfd[1].events = POLLIN;
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "kafka-mock: could not poll: %s\n", strerror(errno));
            return;
        }
        if (pfd[0].revents & POLLIN) {
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                fprintf(stderr, "kafka-mock: stopping on signal %u\n", si.ssi_signo);
            return;
        }
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
            stdin_open = kmock_control_read(km, line, &len, &overlong);
    }
}

/* ---- main --------------------------------------------------------------- */

static void kmock_usage(FILE *out)
{
    int i;

    fprintf(out,
            "usage: kafka-mock [--brokers N] [--partitions N] [--topic NAME]... "
            "[--exit-with-parent]\n"
            "\n"
            "Runs librdkafka's mock Kafka cluster on 127.0.0.1, prints its bootstrap\n"
            "servers as the first line of stdout and serves until SIGTERM or SIGINT.\n"
            "\n"
            "  --brokers N          brokers in the cluster, 1..%d (default 1)\n"
            "  --partitions N       partitions of topics created by --topic and by\n"
            "                       create-topic without a count (default 4); topics\n"
            "                       that clients auto-create always get 4\n"
            "  --topic NAME         create NAME at start (repeatable)\n"
            "  --exit-with-parent   stop when the process that started us exits\n"
            "  --help               this text\n"
            "\n"
            "Control commands on stdin, one per line, each answered by one line\n"
            "\"ok\" or \"error: <reason>\"; EOF on stdin does not stop the server:\n",
            KMOCK_MAX_BROKERS);
    for (i = 0; i < KMOCK_CMD_CNT; i++)
        fprintf(out, "  %s\n", kmock_cmds[i].usage);
    fprintf(out, "API_KEY is a number or a name (Produce, Fetch, InitProducerId, EndTxn, ...);\n"
                 "ERRCODE a number or a librdkafka name (NOT_COORDINATOR, ...).\n");
}

static int kmock_bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int kmock_bad_usage(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "kafka-mock: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry \"kafka-mock --help\"\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'}, {"partitions", required_argument, NULL, 'p'},
        {"topic", required_argument, NULL, 't'},   {"exit-with-parent", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    struct kmock km = {.brokers = 1, .partitions = 4};
    const char *topics[KMOCK_MAX_TOPICS];
    int topic_cnt = 0, exit_with_parent = 0, opt, i, sfd = -1, rc = 1;
    char errstr[512], err[512];
    rd_kafka_conf_t *conf;
    sigset_t sigs;
    pid_t parent;
    long v;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            if (kmock_parse_int(optarg, 1, KMOCK_MAX_BROKERS, &v) != 0)
                return kmock_bad_usage("--brokers: \"%s\" is not a number from 1 to %d", optarg,
                                       KMOCK_MAX_BROKERS);
            km.brokers = (int)v;
            break;
        case 'p':
            if (kmock_parse_int(optarg, 1, KMOCK_MAX_PARTITIONS, &v) != 0)
                return kmock_bad_usage("--partitions: \"%s\" is not a number from 1 to %d", optarg,
                                       KMOCK_MAX_PARTITIONS);
            km.partitions = (int)v;
            break;
        case 't':
            if (topic_cnt == KMOCK_MAX_TOPICS)
                return kmock_bad_usage("--topic: more than %d topics", KMOCK_MAX_TOPICS);
            if (optarg[0] == '\0')
                return kmock_bad_usage("--topic: empty topic name");
            topics[topic_cnt++] = optarg;
            break;
        case 'P':
            exit_with_parent = 1;
            break;
        case 'h':
            kmock_usage(stdout);
            return 0;
        case ':':
            return kmock_bad_usage("option \"%s\" needs a value", argv[optind - 1]);
        default:
            return kmock_bad_usage("unknown option \"%s\"", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return kmock_bad_usage("unexpected argument \"%s\"", argv[optind]);

    /* Block the stop signals before librdkafka starts its threads, which
     * inherit the mask: then only our signalfd ever sees them, and no thread
     * dies of them mid-write.  A reader gone from our stdout must not kill
     * the broker either. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "kafka-mock: could not create signalfd: %s\n", strerror(errno));
        return 1;
    }
    if (exit_with_parent) {
        /* A test killed with -9 cannot stop us; the kernel does. */
        parent = getppid();
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
            fprintf(stderr, "kafka-mock: could not set parent death signal: %s\n", strerror(errno));
            goto fail;
        }
        if (getppid() != parent) {
            fprintf(stderr, "kafka-mock: parent exited before we started\n");
            goto fail;
        }
    }

    /* The mock cluster needs a client handle to own its thread; this one
     * never connects anywhere. */
    conf = rd_kafka_conf_new();
    /* log_level 4 (warning): its notice that it has no bootstrap.servers is
     * true and only noise here. */
    if (rd_kafka_conf_set(conf, "client.id", "kafka-mock", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-mock: could not configure client: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    km.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (km.rk == NULL) {
        fprintf(stderr, "kafka-mock: could not create client: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    /* Listeners bind 127.0.0.1 (INADDR_LOOPBACK) on ephemeral ports. */
    km.mcluster = rd_kafka_mock_cluster_new(km.rk, km.brokers);
    if (km.mcluster == NULL) {
        fprintf(stderr, "kafka-mock: could not create mock cluster of %d brokers\n", km.brokers);
        goto fail;
    }
    for (i = 0; i < topic_cnt; i++) {
        if (kmock_topic_create(&km, topics[i], km.partitions, err, sizeof(err)) != 0) {
            fprintf(stderr, "kafka-mock: could not create topic: %s\n", err);
            goto fail;
        }
    }

    printf("%s\n", rd_kafka_mock_cluster_bootstraps(km.mcluster));
    fflush(stdout);

    kmock_serve(&km, sfd);
    rc = 0;

fail:
    if (km.mcluster != NULL)
        rd_kafka_mock_cluster_destroy(km.mcluster);
    if (km.rk != NULL)
        rd_kafka_destroy(km.rk);
    if (sfd >= 0)
        close(sfd);
    return rc;
}
