/*
 * Unit tests of the S3 client's pure parts: key and query encoding for
 * SigV4 (s3_sign.c, with vectors of AWS's SigV4 test suite), URLs in both
 * addressing styles, the headers we sign, XML reading (s3_xml.c:
 * ListObjectsV2 pages, errors, entities), retry classification and backoff,
 * part sizes, credentials (s3_creds.c), s3:// urls.
 */
#include "sinks/s3.h"
#include "tests/unit/tap.h"

#include "common/buf.h"
#include "common/sha256.h"
#include "common/strlist.h"
#include "sinks/s3_creds.h"
#include "sinks/s3_sign.h"
#include "sinks/s3_xml.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

static const char *enc(const char *s, bool keep_slash, struct zetl_buf *b)
{
    zetl_buf_reset(b);
    zetl_s3_uri_encode(s, strlen(s), keep_slash, b);
    zetl_buf_putc(b, '\0');
    return b->data;
}

static void test_uri_encode(void)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    CHECK_STR(enc("AZaz09-._~", true, &b), "AZaz09-._~");
    CHECK_STR(enc("a/b c/d", true, &b), "a/b%20c/d");
    CHECK_STR(enc("a/b c/d", false, &b), "a%2Fb%20c%2Fd");
    CHECK_STR(enc("users%2E.csv.zst", true, &b), "users%252E.csv.zst");
    CHECK_STR(enc("caf\xC3\xA9+=&?#*", true, &b), "caf%C3%A9%2B%3D%26%3F%23%2A");
    CHECK_STR(enc("./../x", true, &b), "./../x");
    CHECK_STR(enc("", true, &b), "");
    zetl_buf_release(&b);
}

static void test_query(void)
{
    struct zetl_buf b;
    const char *list[] = {
        "prefix",      "runs/a b/", "list-type",          "2",     "max-keys", "1000",
        "start-after", "k~1",       "continuation-token", "1/2+3="};
    const char *up[] = {"uploads", NULL};
    const char *part[] = {"uploadId", "VXBsb2FkIElE.x-y_z", "partNumber", "10"};

    zetl_buf_init(&b, 0);
    zetl_s3_query(list, 5, &b);
    CHECK_STR(b.data, "continuation-token=1%2F2%2B3%3D&list-type=2&max-keys=1000&"
                      "prefix=runs%2Fa%20b%2F&start-after=k~1");
    zetl_buf_reset(&b);
    zetl_s3_query(up, 1, &b);
    CHECK_STR(b.data, "uploads=");
    zetl_buf_reset(&b);
    /* Sorted by key: partNumber before uploadId (byte order, upper case first). */
    zetl_s3_query(part, 2, &b);
    CHECK_STR(b.data, "partNumber=10&uploadId=VXBsb2FkIElE.x-y_z");
    zetl_buf_release(&b);
}

static void test_urls(void)
{
    struct zetl_buf b;
    struct zetl_s3_opts o = {0};

    zetl_buf_init(&b, 0);
    o.region = "eu-west-1";
    zetl_s3_url(&o, "my-bucket", "p/s/a b.csv.zst", NULL, &b);
    CHECK_STR(b.data, "https://my-bucket.s3.eu-west-1.amazonaws.com/p/s/a%20b.csv.zst");
    zetl_buf_reset(&b);
    zetl_s3_url(&o, "my-bucket", "", "list-type=2&prefix=p%2F", &b);
    CHECK_STR(b.data, "https://my-bucket.s3.eu-west-1.amazonaws.com/?list-type=2&prefix=p%2F");

    o.path_style = true;
    zetl_buf_reset(&b);
    zetl_s3_url(&o, "my.bucket", "k", NULL, &b);
    CHECK_STR(b.data, "https://s3.eu-west-1.amazonaws.com/my.bucket/k");

    o.endpoint = "http://127.0.0.1:9000/";
    zetl_buf_reset(&b);
    zetl_s3_url(&o, "b", "x/y", "uploadId=1", &b);
    CHECK_STR(b.data, "http://127.0.0.1:9000/b/x/y?uploadId=1");
    zetl_buf_reset(&b);
    zetl_s3_url(&o, "b", "", "list-type=2", &b);
    CHECK_STR(b.data, "http://127.0.0.1:9000/b?list-type=2");

    o.path_style = false;
    zetl_buf_reset(&b);
    zetl_s3_url(&o, "b", "x", NULL, &b);
    CHECK_STR(b.data, "http://b.127.0.0.1:9000/x");
    o.endpoint = "https://minio.example.com";
    zetl_buf_reset(&b);
    zetl_s3_url(&o, "b", "x", NULL, &b);
    CHECK_STR(b.data, "https://b.minio.example.com/x");

    o.region = NULL;
    o.endpoint = NULL;
    zetl_buf_reset(&b);
    zetl_s3_url(&o, "b", "k", NULL, &b);
    CHECK_STR(b.data, "https://b.s3.us-east-1.amazonaws.com/k");
    zetl_buf_release(&b);
}

static void test_sigv4_inputs(void)
{
    struct zetl_buf b;
    struct zetl_strlist h = {NULL, 0};
    char hex[65];

    zetl_buf_init(&b, 0);
    zetl_s3_sigv4_param("ap-southeast-2", &b);
    CHECK_STR(b.data, "aws:amz:ap-southeast-2:s3");

    zetl_sha256_hex("", 0, hex);
    zetl_s3_headers(hex, NULL, NULL, &h);
    CHECK(h.n == 1);
    CHECK_STR(h.items[0], "x-amz-content-sha256: "
                          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    zetl_strlist_release(&h);

    zetl_sha256_hex("hello", 5, hex);
    zetl_s3_headers(hex, "FwoGZXIvYXdzE//token+", "application/xml", &h);
    CHECK(h.n == 3);
    CHECK_STR(h.items[0], "x-amz-content-sha256: "
                          "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    CHECK_STR(h.items[1], "x-amz-security-token: FwoGZXIvYXdzE//token+");
    CHECK_STR(h.items[2], "Content-Type: application/xml");
    zetl_strlist_release(&h);
    zetl_buf_release(&b);
}

static bool dec(const char *s, struct zetl_buf *b)
{
    zetl_buf_reset(b);
    if (!zetl_s3_xml_decode(s, strlen(s), b))
        return false;
    zetl_buf_putc(b, '\0');
    return true;
}

static void test_xml_decode(void)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    CHECK(dec("a&amp;b&lt;c&gt;d&quot;e&apos;f", &b) && strcmp(b.data, "a&b<c>d\"e'f") == 0);
    CHECK(dec("&#65;&#x42;&#xe9;&#x1F600;", &b) &&
          strcmp(b.data, "AB\xC3\xA9\xF0\x9F\x98\x80") == 0);
    CHECK(dec("plain", &b) && strcmp(b.data, "plain") == 0);
    CHECK(dec("", &b));
    CHECK(!dec("a&b", &b));
    CHECK(!dec("&nbsp;", &b));
    CHECK(!dec("&#;", &b));
    CHECK(!dec("&#x;", &b));
    CHECK(!dec("&#0;", &b));
    CHECK(!dec("&#xD800;", &b));
    CHECK(!dec("&#x110000;", &b));
    CHECK(!dec("&#12a;", &b));
    CHECK(!dec("&#99999999999;", &b));
    zetl_buf_release(&b);
}

static const char LIST1[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
    "<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
    "<IsTruncated>true</IsTruncated>"
    "<Contents><Key>p/s/A-B/a&amp;b &lt;1&gt;.csv.zst</Key>"
    "<LastModified>2024-01-01T00:00:00.000Z</LastModified>"
    "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>1234</Size>"
    "<StorageClass>STANDARD</StorageClass></Contents>\n"
    "<Contents>\n  <Key>p/s/A-B/manifest.json</Key>\n  <Size>0</Size>\n</Contents>"
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
    "</ListBucketResult>";

static const char LIST2[] = "<ListBucketResult><Prefix>p/</Prefix><Delimiter>/</Delimiter>"
                            "<IsTruncated>false</IsTruncated>"
                            "<CommonPrefixes><Prefix>p/a/</Prefix></CommonPrefixes>"
                            "<CommonPrefixes><Prefix>p/&#x62;/</Prefix></CommonPrefixes>"
                            "</ListBucketResult>";

static void test_parse_list(void)
{
    struct zetl_s3_list_page pg;
    struct zetl_errbuf eb = {""};
    static const char *const bad[] = {
        "",
        "<Error><Code>x</Code></Error>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
        "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&b</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key></Contents>",
        "<ListBucketResult><Contents><Key>a</Key>",
        "<ListBucketResult><Contents><Key><x/></Key></Contents></ListBucketResult>",
    };

    CHECK(zetl_s3_parse_list(LIST1, strlen(LIST1), &pg, &eb) == ZETL_OK);
    CHECK(pg.nkeys == 2);
    if (pg.nkeys == 2) {
        CHECK_STR(pg.keys[0], "p/s/A-B/a&b <1>.csv.zst");
        CHECK(pg.sizes[0] == 1234);
        CHECK_STR(pg.keys[1], "p/s/A-B/manifest.json");
        CHECK(pg.sizes[1] == 0);
    }
    CHECK(pg.truncated);
    CHECK_STR(pg.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    CHECK(pg.prefixes.n == 0);
    zetl_s3_list_page_release(&pg);

    CHECK(zetl_s3_parse_list(LIST2, strlen(LIST2), &pg, &eb) == ZETL_OK);
    CHECK(pg.nkeys == 0 && !pg.truncated && pg.next_token == NULL);
    CHECK(pg.prefixes.n == 2);
    if (pg.prefixes.n == 2) {
        CHECK_STR(pg.prefixes.items[0], "p/a/");
        CHECK_STR(pg.prefixes.items[1], "p/b/");
    }
    zetl_s3_list_page_release(&pg);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bool rejected = zetl_s3_parse_list(bad[i], strlen(bad[i]), &pg, &eb) == ZETL_ERR_PROTOCOL;
        CHECK(rejected);
        if (!rejected)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
    /* Every prefix of a valid page: rejected cleanly or parsed, never a crash. */
    for (size_t n = 0; n < sizeof(LIST1) - 1; n++) {
        if (zetl_s3_parse_list(LIST1, n, &pg, &eb) == ZETL_OK)
            zetl_s3_list_page_release(&pg);
    }
}

static void test_parse_error(void)
{
    struct zetl_s3_error se;
    static const char e1[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied"
                             "</Code><Message>Access Denied</Message><RequestId>X</RequestId>"
                             "<HostId>Y</HostId></Error>";
    static const char e2[] =
        "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is "
        "malformed; the region &apos;us-east-1&apos; is wrong; expecting &apos;eu-west-1&apos;"
        "</Message><Region>eu-west-1</Region></Error>";
    static const char e3[] = "<Error><Code>PermanentRedirect</Code><Message>The bucket you are "
                             "attempting to access must be addressed using the specified "
                             "endpoint.</Message><Endpoint>b.s3.eu-west-1.amazonaws.com"
                             "</Endpoint><Bucket>b</Bucket></Error>";
    static const char e4[] = "<Error><Code>Bad\nCode\x01</Code><Message>line1\nline2</Message>"
                             "</Error>";

    CHECK(zetl_s3_parse_error(e1, strlen(e1), &se));
    CHECK_STR(se.code, "AccessDenied");
    CHECK_STR(se.message, "Access Denied");
    CHECK_STR(se.region, "");
    CHECK(zetl_s3_parse_error(e2, strlen(e2), &se));
    CHECK_STR(se.region, "eu-west-1");
    CHECK(strstr(se.message, "expecting 'eu-west-1'") != NULL);
    CHECK(zetl_s3_parse_error(e3, strlen(e3), &se));
    CHECK_STR(se.code, "PermanentRedirect");
    CHECK_STR(se.endpoint, "b.s3.eu-west-1.amazonaws.com");
    /* One log line: control characters do not get through. */
    CHECK(zetl_s3_parse_error(e4, strlen(e4), &se));
    CHECK_STR(se.code, "Bad Code?");
    CHECK_STR(se.message, "line1 line2");
    CHECK(!zetl_s3_parse_error("", 0, &se));
    CHECK(!zetl_s3_parse_error("<html>503</html>", 16, &se));
    CHECK(!zetl_s3_parse_error("<Error><Message>m</Message></Error>", 35, &se));
}

static void test_classify(void)
{
    CHECK(zetl_s3_classify(CURLE_OK, 200, NULL) == ZETL_OK);
    CHECK(zetl_s3_classify(CURLE_OK, 204, NULL) == ZETL_OK);
    CHECK(zetl_s3_classify(CURLE_OK, 500, "InternalError") == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_OK, 503, "SlowDown") == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_OK, 502, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_OK, 429, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_OK, 408, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_OK, 400, "RequestTimeout") == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_OK, 400, "AuthorizationHeaderMalformed") == ZETL_ERR_FATAL);
    CHECK(zetl_s3_classify(CURLE_OK, 403, "AccessDenied") == ZETL_ERR_FATAL);
    CHECK(zetl_s3_classify(CURLE_OK, 403, "SignatureDoesNotMatch") == ZETL_ERR_FATAL);
    CHECK(zetl_s3_classify(CURLE_OK, 404, "NoSuchBucket") == ZETL_ERR_FATAL);
    CHECK(zetl_s3_classify(CURLE_OK, 301, "PermanentRedirect") == ZETL_ERR_FATAL);
    CHECK(zetl_s3_classify(CURLE_OK, 404, NULL) == ZETL_ERR_FATAL);
    CHECK(zetl_s3_classify(CURLE_COULDNT_CONNECT, 0, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_OPERATION_TIMEDOUT, 0, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_RECV_ERROR, 0, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_SEND_ERROR, 0, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_PARTIAL_FILE, 200, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_GOT_NOTHING, 0, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_COULDNT_RESOLVE_HOST, 0, NULL) == ZETL_ERR_RETRY);
    CHECK(zetl_s3_classify(CURLE_URL_MALFORMAT, 0, NULL) == ZETL_ERR_FATAL);
    CHECK(zetl_s3_classify(CURLE_PEER_FAILED_VERIFICATION, 0, NULL) == ZETL_ERR_FATAL);
}

static void test_backoff(void)
{
    static const uint32_t rnds[] = {0, 1, 49, 50, 12345, 123456789u, UINT32_MAX};

    /* Attempt a waits between d/2 and d, d = base * 2^(a-1) capped. */
    for (int a = 1; a <= 12; a++) {
        long d = ZETL_S3_BACKOFF_BASE_MS << (a - 1);

        if (d > ZETL_S3_BACKOFF_MAX_MS)
            d = ZETL_S3_BACKOFF_MAX_MS;
        for (size_t i = 0; i < sizeof(rnds) / sizeof(rnds[0]); i++) {
            long w = zetl_s3_backoff_ms(a, rnds[i]);
            CHECK(w >= d / 2 && w <= d);
        }
    }
    CHECK(zetl_s3_backoff_ms(1, 0) == 50);
    CHECK(zetl_s3_backoff_ms(2, 0) == 100);
    CHECK(zetl_s3_backoff_ms(3, 0) == 200);
    CHECK(zetl_s3_backoff_ms(1, 50) == 100);
    CHECK(zetl_s3_backoff_ms(30, 0) == ZETL_S3_BACKOFF_MAX_MS / 2);
}

static void test_part_size(void)
{
    const uint64_t mib = (uint64_t)1 << 20;

    CHECK(zetl_s3_part_size(50 * mib, 8 * mib) == 8 * mib);
    CHECK(zetl_s3_part_size(50 * mib, 1 * mib) == 5 * mib);
    /* 100 GiB at 8 MiB would be 12800 parts: raised to whole MiB under 10000 parts. */
    CHECK(zetl_s3_part_size(100 * 1024 * mib, 8 * mib) == 11 * mib);
    CHECK((100 * 1024 * mib + 11 * mib - 1) / (11 * mib) <= ZETL_S3_MAX_PARTS);
}

static void test_complete_xml(void)
{
    struct zetl_buf b;
    char e1[] = "\"a1\"", e2[] = "\"b&2\"";
    char *etags[] = {e1, e2};

    zetl_buf_init(&b, 0);
    zetl_s3_complete_xml(etags, 2, &b);
    CHECK_STR(b.data, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                      "<Part><PartNumber>1</PartNumber><ETag>&quot;a1&quot;</ETag></Part>"
                      "<Part><PartNumber>2</PartNumber><ETag>&quot;b&amp;2&quot;</ETag></Part>"
                      "</CompleteMultipartUpload>");
    zetl_buf_release(&b);
}

static void test_creds(void)
{
    static const char file[] = "# comment\n"
                               "[default]\n"
                               "aws_access_key_id = AKIADEFAULT\n"
                               "aws_secret_access_key=secret/default+\n"
                               "\n"
                               "[ zetl ]\r\n"
                               "  aws_access_key_id\t= AKIAZETL  \r\n"
                               "; another comment\n"
                               "aws_secret_access_key = s3cr=t\n"
                               "aws_session_token = tok\n"
                               "region = eu-west-1\n"
                               "[profile other]\n"
                               "aws_access_key_id = AKIAOTHER\n"
                               "[broken]\n"
                               "aws_access_key_id = AKIABROKEN\n";
    struct zetl_s3_creds cr;
    struct zetl_errbuf eb = {""};

    CHECK(zetl_s3_creds_parse("f", file, strlen(file), "default", &cr, &eb) == ZETL_OK);
    CHECK_STR(cr.access_key, "AKIADEFAULT");
    CHECK_STR(cr.secret_key, "secret/default+");
    CHECK(cr.token == NULL);
    zetl_s3_creds_release(&cr);

    CHECK(zetl_s3_creds_parse("f", file, strlen(file), "zetl", &cr, &eb) == ZETL_OK);
    CHECK_STR(cr.access_key, "AKIAZETL");
    CHECK_STR(cr.secret_key, "s3cr=t");
    CHECK_STR(cr.token, "tok");
    zetl_s3_creds_release(&cr);

    CHECK(zetl_s3_creds_parse("f", file, strlen(file), "broken", &cr, &eb) == ZETL_ERR_FATAL);
    CHECK(strstr(eb.msg, "lacks") != NULL && strstr(eb.msg, "AKIA") == NULL);
    CHECK(zetl_s3_creds_parse("f", file, strlen(file), "nope", &cr, &eb) == ZETL_ERR_FATAL);
    CHECK(strstr(eb.msg, "no profile \"nope\"") != NULL);
    CHECK(zetl_s3_creds_parse("f", "", 0, "default", &cr, &eb) == ZETL_ERR_FATAL);

    setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "envtok", 1);
    CHECK(zetl_s3_creds_load(&cr, &eb) == ZETL_OK);
    CHECK_STR(cr.access_key, "AKIAENV");
    CHECK_STR(cr.token, "envtok");
    zetl_s3_creds_release(&cr);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/zetl/credentials", 1);
    CHECK(zetl_s3_creds_load(&cr, &eb) == ZETL_ERR_FATAL);
    CHECK(strstr(eb.msg, "no AWS credentials") != NULL);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
}

static void test_parse_url(void)
{
    struct zetl_errbuf eb = {""};
    char *b, *p;

    CHECK(zetl_s3_parse_url("s3://bucket/a/b/", &b, &p, &eb) == ZETL_OK);
    CHECK_STR(b, "bucket");
    CHECK_STR(p, "a/b");
    free(b);
    free(p);
    CHECK(zetl_s3_parse_url("s3://bucket", &b, &p, &eb) == ZETL_OK);
    CHECK_STR(p, "");
    free(b);
    free(p);
    CHECK(zetl_s3_parse_url("s3://bucket//x", &b, &p, &eb) == ZETL_OK);
    CHECK_STR(p, "x");
    free(b);
    free(p);
    CHECK(zetl_s3_parse_url("s3:///x", &b, &p, &eb) == ZETL_ERR_USAGE);
    CHECK(zetl_s3_parse_url("file:///x", &b, &p, &eb) == ZETL_ERR_USAGE);
}

/* The canonical query of kv, NUL-terminated in b. */
static const char *qry(const char *const *kv, size_t npairs, struct zetl_buf *b)
{
    zetl_buf_reset(b);
    zetl_s3_query(kv, npairs, b);
    zetl_buf_putc(b, '\0');
    return b->data;
}

/*
 * Canonical URIs and query strings of AWS's SigV4 test suite
 * (aws-sig-v4-test-suite: get-utf8, get-space, get-slash-pointless-dot as
 * S3 sends it, get-vanilla-query-order-key-case, -order-value, -unreserved,
 * get-vanilla-utf8-query, post-x-www-form-urlencoded style '+' and '=').
 */
static void test_sigv4_suite_vectors(void)
{
    static const char unres[] =
        "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const char *order_case[] = {"Param2", "value2", "Param1", "value1"};
    const char *order_value[] = {"Param1", "value2", "Param1", "Value1"};
    const char *unreserved[] = {unres, unres};
    const char *utf8[] = {"\xE1\x88\xB4", "bar"};
    const char *plus[] = {"k", "a+b=c d"};
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    CHECK_STR(enc("/\xE1\x88\xB4", true, &b), "/%E1%88%B4");
    CHECK_STR(enc("/example space/", true, &b), "/example%20space/");
    /* S3 keys are not normalized: dots and double slashes are sent as they are. */
    CHECK_STR(enc("/./a//b/../c", true, &b), "/./a//b/../c");

    CHECK_STR(qry(order_case, 2, &b), "Param1=value1&Param2=value2");
    CHECK_STR(qry(order_value, 2, &b), "Param1=Value1&Param1=value2");
    qry(unreserved, 1, &b);
    CHECK(strlen(b.data) == 2 * strlen(unres) + 1 && b.data[strlen(unres)] == '=' &&
          strncmp(b.data, unres, strlen(unres)) == 0);
    CHECK_STR(qry(utf8, 1, &b), "%E1%88%B4=bar");
    CHECK_STR(qry(plus, 1, &b), "k=a%2Bb%3Dc%20d");
    CHECK_STR(qry(NULL, 0, &b), "");
    zetl_buf_release(&b);
}

static void test_xml_text(void)
{
    static const char doc[] = "<R xmlns=\"x\"><Keys>no</Keys><Key attr=\"1\">a&amp;b</Key>"
                              "<Empty/><Key>second</Key><Nested><b>x</b></Nested>"
                              "<Open>never closed</R>";
    struct zetl_buf t;
    uint64_t v = 7;

    zetl_buf_init(&t, 0);
    /* The first <Key> whole name, not <Keys>; attributes allowed; decoded. */
    CHECK(zetl_s3_xml_text(doc, strlen(doc), "Key", &t) && strcmp(t.data, "a&b") == 0);
    CHECK(zetl_s3_xml_text(doc, strlen(doc), "Empty", &t) && t.len == 0);
    CHECK(!zetl_s3_xml_text(doc, strlen(doc), "Nested", &t)); /* markup is not text */
    CHECK(!zetl_s3_xml_text(doc, strlen(doc), "Open", &t));
    CHECK(!zetl_s3_xml_text(doc, strlen(doc), "Missing", &t));
    CHECK(!zetl_s3_xml_text(doc, 20, "Key", &t)); /* cut before the element */
    zetl_buf_release(&t);

    CHECK(zetl_s3_parse_u64("0", &v) && v == 0);
    CHECK(zetl_s3_parse_u64("18446744073709551615", &v) && v == UINT64_MAX);
    CHECK(!zetl_s3_parse_u64("18446744073709551616", &v));
    CHECK(!zetl_s3_parse_u64("", &v));
    CHECK(!zetl_s3_parse_u64("-1", &v));
    CHECK(!zetl_s3_parse_u64(" 1", &v));
    CHECK(!zetl_s3_parse_u64("1 ", &v));
    CHECK(!zetl_s3_parse_u64("+1", &v));
}

/* A shared credentials file read from disk, profile from AWS_PROFILE. */
static void test_creds_file(void)
{
    char path[] = "/tmp/zetl-creds-XXXXXX";
    static const char text[] = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n"
                               "[profile p2]\naws_access_key_id = C\naws_secret_access_key = D\n";
    struct zetl_s3_creds cr;
    struct zetl_errbuf eb = {""};
    int fd = mkstemp(path);

    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1));
    close(fd);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    setenv("AWS_PROFILE", "p2", 1);
    CHECK(zetl_s3_creds_load(&cr, &eb) == ZETL_OK);
    CHECK_STR(cr.access_key, "C");
    CHECK_STR(cr.secret_key, "D");
    zetl_s3_creds_release(&cr);
    CHECK(cr.access_key == NULL && cr.secret_key == NULL && cr.token == NULL);
    unsetenv("AWS_PROFILE");
    CHECK(zetl_s3_creds_load(&cr, &eb) == ZETL_OK);
    CHECK_STR(cr.access_key, "A");
    zetl_s3_creds_release(&cr);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    unlink(path);
}

int main(void)
{
    test_uri_encode();
    test_query();
    test_sigv4_suite_vectors();
    test_urls();
    test_sigv4_inputs();
    test_xml_decode();
    test_xml_text();
    test_parse_list();
    test_parse_error();
    test_classify();
    test_backoff();
    test_part_size();
    test_complete_xml();
    test_creds();
    test_creds_file();
    test_parse_url();
    return zetl_tap_done();
}
