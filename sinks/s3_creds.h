/*
 * AWS credentials for the S3 client (see s3.h): from the environment or a
 * shared credentials file.  Secrets are wiped when released and never
 * appear in a message.
 */
#ifndef ZETL_S3_CREDS_H
#define ZETL_S3_CREDS_H

#include <stddef.h>

#include "common/err.h"

/* AWS credentials; every member owned.  Never log them. */
struct zetl_s3_creds {
    char *access_key;
    char *secret_key;
    char *token; /* NULL without a session token */
};

/*
 * Loads credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+
 * AWS_SESSION_TOKEN), else the shared credentials file
 * (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials), profile AWS_PROFILE
 * or "default".  ZETL_ERR_FATAL when none are found.
 */
enum zetl_err zetl_s3_creds_load(struct zetl_s3_creds *cr, struct zetl_errbuf *eb);
/*
 * Reads profile `profile` of a shared credentials file's text (INI: [name]
 * sections, key = value lines, '#' and ';' comments).  ZETL_ERR_FATAL when
 * the profile or its keys are missing; `name` is for messages.
 */
enum zetl_err zetl_s3_creds_parse(const char *name, const char *text, size_t len,
                                  const char *profile, struct zetl_s3_creds *cr,
                                  struct zetl_errbuf *eb);
/* Wipes the secret and frees every member; leaves *cr empty. */
void zetl_s3_creds_release(struct zetl_s3_creds *cr);

#endif
