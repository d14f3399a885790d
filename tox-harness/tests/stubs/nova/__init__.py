# Minimal stand-in for the nova package: only nova.exception, so that oslo.messaging can
# rebuild remote nova exceptions (allowed_remote_exmods=['nova.exception']) in the tests.
