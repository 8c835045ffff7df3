"""/healthz and /readyz: whether this process serves, and whether this host should get traffic."""

from __future__ import annotations

import sqlalchemy as sa
from flask.views import MethodView
from flask_smorest import Blueprint

from apikeys import errors
from apikeys import schemas
from apikeys.storage import fingerprints
from apikeys.verification.extension import get_state

blp = Blueprint("health", __name__, description="Whether this host can serve.")


@blp.route("/healthz")
class Liveness(MethodView):
    @blp.doc(operationId="health", security=[])
    @blp.response(200, schemas.HealthEnvelopeSchema)
    def get(self):
        """Answer 200 whenever this process serves requests, without reading the database."""
        # A liveness probe that failed with the database would have an orchestrator restart every host
        # at once in an outage, which restarts nothing that is broken: that is /readyz's to report.
        return {"data": {"status": "ok"}}


@blp.route("/readyz")
class Readiness(MethodView):
    @blp.doc(operationId="readiness", security=[])
    @blp.response(200, schemas.HealthEnvelopeSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self):
        """Answer 200 when the database answers and records a verifier key this host has."""
        state = get_state()
        try:
            fingerprints.check_recorded_verifier_key(state.engine, state.fingerprints)
        except sa.exc.SQLAlchemyError:
            raise errors.DatabaseUnavailable() from None
        except fingerprints.VerifierKeyMismatch:
            # Still answering verifications correctly, but slowly and without writing digests: take it out.
            raise errors.VerifierKeyMismatch() from None
        return {"data": {"status": "ok"}}
