#!/bin/sh
# Entrypoint of the offline-built Lambda Python base image, with the contract of the public image:
# the handler is the only argument; without AWS_LAMBDA_RUNTIME_API (plain `docker run`) the bundled
# Runtime Interface Emulator serves the invoke API on port 8080.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie $RUNTIME_ENTRYPOINT
else
  exec $RUNTIME_ENTRYPOINT
fi
