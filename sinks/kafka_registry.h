/*
 * A client of the Confluent Schema Registry REST API, the subset zetl uses:
 * registering a schema under a subject (POST /subjects/<s>/versions, which
 * the registry answers with the id of an identical schema when it has one)
 * and fetching a schema by id (GET /schemas/ids/<id>).  libcurl, one easy
 * handle, used from one thread.
 */
#ifndef ZETL_KAFKA_REGISTRY_H
#define ZETL_KAFKA_REGISTRY_H

#include <stdint.h>

#include "common/err.h"

struct zetl_registry;

/* `url` is copied ("http://host:port[/prefix]"). */
struct zetl_registry *zetl_registry_new(const char *url);
void zetl_registry_free(struct zetl_registry *r); /* NULL: no-op */

/*
 * Registers the Avro schema `schema` (JSON text) under `subject` and sets
 * *id.  ZETL_ERR_RETRY when the registry is unreachable or answers 5xx;
 * ZETL_ERR_FATAL when it refuses the schema (incompatible, invalid), with
 * the subject and the registry's reason.
 */
enum zetl_err zetl_registry_register(struct zetl_registry *r, const char *subject,
                                     const char *schema, int32_t *id, struct zetl_errbuf *eb);

/* The schema with global id `id` into *schema (owned).  Errors as above; 404 is FATAL. */
enum zetl_err zetl_registry_get(struct zetl_registry *r, int32_t id, char **schema,
                                struct zetl_errbuf *eb);

#endif
