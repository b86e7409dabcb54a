/*
 * A minimal OAuth validator module for tests/oauth.rs, compiled at test time against the
 * PostgreSQL 18 server headers.
 *
 * It accepts exactly one bearer token, "pqlib-good-token", and says it identifies the role
 * "pqlib_oauth" (the authenticated identity, which pg_hba.conf without a `map` requires to be
 * the role logged in as). Every other token is not authorized, which the server reports to
 * the client as a failed OAuth authentication.
 */
#include "postgres.h"

#include <string.h>

#include "fmgr.h"
#include "libpq/oauth.h"

PG_MODULE_MAGIC;

#define GOOD_TOKEN "pqlib-good-token"
#define ITS_ROLE "pqlib_oauth"

static bool
validate_token(const ValidatorModuleState *state, const char *token, const char *role,
			   ValidatorModuleResult *result)
{
	(void) state;
	(void) role;
	if (strcmp(token, GOOD_TOKEN) == 0)
	{
		result->authorized = true;
		result->authn_id = pstrdup(ITS_ROLE);
	}
	else
		result->authorized = false;
	/* true: the token was checked (an authorization decision, not an internal error) */
	return true;
}

static const OAuthValidatorCallbacks callbacks = {
	.magic = PG_OAUTH_VALIDATOR_MAGIC,
	.validate_cb = validate_token,
};

const OAuthValidatorCallbacks *
_PG_oauth_validator_module_init(void)
{
	return &callbacks;
}
