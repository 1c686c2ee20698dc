"""schemathesis hooks of infra/local/schemathesis (loaded through SCHEMATHESIS_HOOKS).

Generated requests disable accounts and revoke keys by id, and schemathesis learns ids from
responses (GET /api/v1/accounts lists the run's own account), so left alone a run soon
disables the account of the key it sends or revokes that key, and every later request is
403 or 401, which tests nothing. These hooks point such requests at an id that names nothing
(0), only when they name the run's own account (KURZ_SCHEMATHESIS_ACCOUNT_ID) or key
(KURZ_SCHEMATHESIS_KEY_ID). Every other request goes out as generated.
"""

import os

import schemathesis

PROTECTED = {
    ("POST", "/api/v1/accounts/{id}/disable"): os.environ["KURZ_SCHEMATHESIS_ACCOUNT_ID"],
    ("DELETE", "/api/v1/keys/{id}"): os.environ["KURZ_SCHEMATHESIS_KEY_ID"],
}


def names(value, protected):
    """Whether the service would read `value` as the id `protected` (Rust's i64 parse takes a
    sign and leading zeros; Python's int takes more, which only errs on the safe side)."""
    try:
        return int(str(value)) == int(protected)
    except ValueError:
        return False


@schemathesis.hook
def before_call(context, case, kwargs):
    protected = PROTECTED.get((case.operation.method.upper(), case.operation.path))
    if protected is None or not case.path_parameters:
        return
    if names(case.path_parameters.get("id"), protected):
        case.path_parameters["id"] = 0
