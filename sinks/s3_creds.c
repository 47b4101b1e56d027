/* AWS credentials for the S3 client (see s3_creds.h). */
#include "sinks/s3_creds.h"

#include "common/buf.h"
#include "common/mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S3_CREDS_FILE_MAX ((off_t)1 << 20)

void zetl_s3_creds_release(struct zetl_s3_creds *cr)
{
    /* Wipe secrets before freeing: they must not linger in freed memory dumps. */
    if (cr->secret_key != NULL) {
        volatile char *s = cr->secret_key;
        while (*s)
            *s++ = '\0';
    }
    free(cr->access_key);
    free(cr->secret_key);
    free(cr->token);
    memset(cr, 0, sizeof(*cr));
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r'))
        (*n)--;
}

enum zetl_err zetl_s3_creds_parse(const char *name, const char *text, size_t len,
                                  const char *profile, struct zetl_s3_creds *cr,
                                  struct zetl_errbuf *eb)
{
    const char *p = text, *end = text + len;
    bool in = false, seen = false;

    memset(cr, 0, sizeof(*cr));
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line = p, *eq;
        size_t n = (size_t)((nl ? nl : end) - p);

        p = nl ? nl + 1 : end;
        trim(&line, &n);
        if (n == 0 || line[0] == '#' || line[0] == ';')
            continue;
        if (line[0] == '[') {
            const char *sec = line + 1;
            size_t sl = n >= 2 && line[n - 1] == ']' ? n - 2 : 0;

            trim(&sec, &sl);
            /* ~/.aws/config style "[profile x]" is accepted too. */
            if (sl > 8 && strncmp(sec, "profile ", 8) == 0) {
                sec += 8;
                sl -= 8;
                trim(&sec, &sl);
            }
            in = sl == strlen(profile) && memcmp(sec, profile, sl) == 0;
            seen = seen || in;
            continue;
        }
        if (!in || (eq = memchr(line, '=', n)) == NULL)
            continue;
        {
            const char *k = line, *v = eq + 1;
            size_t kl = (size_t)(eq - line), vl = n - kl - 1;
            char **dst = NULL;

            trim(&k, &kl);
            trim(&v, &vl);
            if (kl == 17 && strncmp(k, "aws_access_key_id", kl) == 0)
                dst = &cr->access_key;
            else if (kl == 21 && strncmp(k, "aws_secret_access_key", kl) == 0)
                dst = &cr->secret_key;
            else if (kl == 17 && strncmp(k, "aws_session_token", kl) == 0)
                dst = &cr->token;
            if (dst != NULL && vl > 0) {
                free(*dst);
                *dst = zetl_strndup(v, vl);
            }
        }
    }
    if (!seen) {
        zetl_s3_creds_release(cr);
        return zetl_err_set(eb, ZETL_ERR_FATAL, "%s has no profile \"%s\"", name, profile);
    }
    if (cr->access_key == NULL || cr->secret_key == NULL) {
        zetl_s3_creds_release(cr);
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "profile \"%s\" of %s lacks aws_access_key_id or "
                            "aws_secret_access_key",
                            profile, name);
    }
    return ZETL_OK;
}

enum zetl_err zetl_s3_creds_load(struct zetl_s3_creds *cr, struct zetl_errbuf *eb)
{
    const char *ak = env_nonempty("AWS_ACCESS_KEY_ID"), *sk = env_nonempty("AWS_SECRET_ACCESS_KEY");
    const char *file = env_nonempty("AWS_SHARED_CREDENTIALS_FILE");
    const char *profile = env_nonempty("AWS_PROFILE");
    struct zetl_buf path, text;
    struct stat st;
    FILE *f = NULL;
    enum zetl_err err;

    memset(cr, 0, sizeof(*cr));
    if (ak != NULL && sk != NULL) {
        const char *tok = env_nonempty("AWS_SESSION_TOKEN");
        cr->access_key = zetl_strdup(ak);
        cr->secret_key = zetl_strdup(sk);
        cr->token = tok ? zetl_strdup(tok) : NULL;
        return ZETL_OK;
    }
    zetl_buf_init(&path, 0);
    zetl_buf_init(&text, (size_t)S3_CREDS_FILE_MAX);
    if (file != NULL) {
        zetl_buf_puts(&path, file);
    } else {
        const char *home = env_nonempty("HOME");
        if (home == NULL) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "no AWS credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE");
            goto fail;
        }
        zetl_buf_printf(&path, "%s/.aws/credentials", home);
    }
    if ((f = fopen(path.data, "r")) == NULL) {
        if (errno == ENOENT)
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "no AWS credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or write \"%s\"",
                               path.data);
        else
            err = zetl_err_set(eb, ZETL_ERR_FATAL, "could not open file \"%s\": %s", path.data,
                               strerror(errno));
        goto fail;
    }
    if (fstat(fileno(f), &st) != 0 || st.st_size > S3_CREDS_FILE_MAX ||
        !zetl_buf_reserve(&text, (size_t)st.st_size + 1)) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "credentials file \"%s\" is not a file of at most %lld bytes", path.data,
                           (long long)S3_CREDS_FILE_MAX);
        goto fail;
    }
    text.len = fread(text.data, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "could not read file \"%s\": %s", path.data,
                           strerror(errno));
        goto fail;
    }
    err =
        zetl_s3_creds_parse(path.data, text.data, text.len, profile ? profile : "default", cr, eb);

fail:
    if (f != NULL)
        fclose(f);
    if (text.data != NULL)
        memset(text.data, 0, text.alloc);
    zetl_buf_release(&text);
    zetl_buf_release(&path);
    return err;
}
