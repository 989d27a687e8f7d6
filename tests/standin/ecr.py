#!/usr/bin/env python3
"""Tiny ECR API client for the shell checks, talking TLS to the front like a real client.

Endpoint and credentials come from the environment (`eval "$(scripts/standin env)"`):
boto3 reads AWS_ENDPOINT_URL_ECR, and verifies the front's certificate against the
system store via AWS_CA_BUNDLE, which is the point: it proves the test CA is trusted.

  ecr.py password                   docker login password from GetAuthorizationToken
  ecr.py create NAME [IMMUTABLE]    create a repository
  ecr.py digest NAME TAG            imageDigest that DescribeImages reports for a tag
  ecr.py images NAME                DescribeImages as JSON
  ecr.py try [--retry]              one DescribeRepositories call: prints "ok" or the error
                                    code; no retries unless --retry (botocore standard mode,
                                    3 attempts); for the fault-injection checks
"""
import base64
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "try":
        attempts = 3 if "--retry" in args else 1
        ecr = boto3.client("ecr", config=Config(retries={"mode": "standard", "total_max_attempts": attempts}))
        try:
            ecr.describe_repositories(maxResults=1)
            print("ok")
        except ClientError as exc:
            print(exc.response["Error"]["Code"])
        return
    ecr = boto3.client("ecr")
    if cmd == "password":
        data = ecr.get_authorization_token()["authorizationData"][0]
        user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
        assert user == "AWS", user
        print(password)
    elif cmd == "create":
        mutability = args[1] if len(args) > 1 else "MUTABLE"
        ecr.create_repository(repositoryName=args[0], imageTagMutability=mutability)
    elif cmd == "digest":
        details = ecr.describe_images(repositoryName=args[0], imageIds=[{"imageTag": args[1]}])
        print(details["imageDetails"][0]["imageDigest"])
    elif cmd == "images":
        details = ecr.describe_images(repositoryName=args[0])["imageDetails"]
        print(json.dumps(details, default=str, indent=1))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
