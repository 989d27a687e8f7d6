#!/bin/sh
echo "hello from ecr-build-push, version $(cat /version)"
