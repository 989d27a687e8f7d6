"""The private registries beyond the primary, and where each host name leads.

ECR has one registry per (account, region), each at `<account>.dkr.ecr.<region>.amazonaws.com`
(plus its FIPS and dual-stack names), with its own API endpoint per region. The stand-in
keeps one docker-registry and one moto behind all of them:

  - moto keys its backends by the SigV4 region and by the account of the access key, so a
    registry's images live in moto's matching account+region. The front's own calls into
    another registry's moto add moto's `x-moto-account-id` header (moto 5.2,
    BaseResponse.get_current_account), since its "standin" access key is account 1's.
  - the docker-registry holds every non-primary repository `r` under an internal prefix,
    `standin-targets/<account>-<region>/r`. That prefix is not a repository name anyone
    pushes to the primary (the primary's catalog hides it), and the client never sees it:
    the front adds it to request paths and takes it out of Location headers, challenges,
    JSON bodies (errors, tag lists) and the catalog.

Inside the front, a non-primary repository is known by its internal name (state keys,
locks, counters, modes, registry paths), and by its plain name only in moto (TargetMoto
strips the prefix) and in what clients see (Target.public).
"""
from __future__ import annotations

from dataclasses import dataclass

from front_common import ACCOUNT, API_HOST, REGION, REGISTRY_HOST, VPCE_API_HOST

ACCOUNT2 = "210987654321"
REGION2 = "us-west-2"
ACCOUNT2_REGION = "eu-west-1"
ACCOUNT2_ROLE = f"arn:aws:iam::{ACCOUNT2}:role/ecr-build-push"
INTERNAL_PREFIX = "standin-targets"
# What moto's GetCallerIdentity says for a key it did not issue (its default user).
BASE_USER = "user/moto"


@dataclass(frozen=True)
class Target:
    """One private registry: an (account, region)."""
    account: str
    region: str

    @property
    def primary(self) -> bool:
        return self.account == ACCOUNT and self.region == REGION

    @property
    def prefix(self) -> str:
        return "" if self.primary else f"{INTERNAL_PREFIX}/{self.account}-{self.region}"

    @property
    def host(self) -> str:
        return f"{self.account}.dkr.ecr.{self.region}.amazonaws.com"

    def internal(self, name):
        """The registry's (and the front state's) name for the client's `name`."""
        if not self.prefix or not isinstance(name, str):
            return name
        return f"{self.prefix}/{name}"

    def public(self, name):
        """The client's name for an internal one."""
        if self.prefix and isinstance(name, str) and name.startswith(self.prefix + "/"):
            return name[len(self.prefix) + 1:]
        return name


PRIMARY = Target(ACCOUNT, REGION)
SECOND_REGION = Target(ACCOUNT, REGION2)
SECOND_ACCOUNT = Target(ACCOUNT2, ACCOUNT2_REGION)

# Registry host -> the registry it names (FIPS and dual-stack names share their region's).
REGISTRY_HOSTS = {
    REGISTRY_HOST: PRIMARY,
    SECOND_REGION.host: SECOND_REGION,
    f"{ACCOUNT}.dkr.ecr-fips.{REGION2}.amazonaws.com": SECOND_REGION,
    f"{ACCOUNT}.dkr-ecr.{REGION2}.on.aws": SECOND_REGION,
    SECOND_ACCOUNT.host: SECOND_ACCOUNT,
}

# ECR API host -> its region (botocore's endpoint rules for `ecr`: api.ecr.<region>,
# api.ecr-fips.<region>; the FIPS and dual-stack forms the ECR endpoints reference lists).
API_HOSTS = {
    API_HOST: REGION,
    VPCE_API_HOST: REGION,
    f"api.ecr.{REGION2}.amazonaws.com": REGION2,
    f"ecr-fips.{REGION2}.amazonaws.com": REGION2,
    f"api.ecr-fips.{REGION2}.amazonaws.com": REGION2,
    f"ecr.{REGION2}.api.aws": REGION2,
    f"api.ecr.{REGION2}.api.aws": REGION2,
    f"api.ecr.{ACCOUNT2_REGION}.amazonaws.com": ACCOUNT2_REGION,
}

# STS: the global name and the regional ones of the regions above -> moto's STS.
STS_HOSTS = {"sts.amazonaws.com"} | {f"sts.{r}.amazonaws.com" for r in (REGION, REGION2, ACCOUNT2_REGION)}

# Every internal prefix of the registry's storage (the primary's catalog hides them).
HIDDEN_PREFIXES = (INTERNAL_PREFIX + "/", "standin-public/")


def target_of_internal(name: str) -> Target:
    """The registry an internal repository name belongs to."""
    if name.startswith(INTERNAL_PREFIX + "/"):
        account, _, region = name.split("/")[1].partition("-")
        return Target(account, region)
    return PRIMARY


def target_moto_class():
    """TargetMoto, built lazily (front_moto imports boto3)."""
    from front_moto import Moto

    class TargetMoto(Moto):
        """Moto's view of one non-primary registry: region and account of its own, and
        internal names turned back into the plain ones moto knows."""

        def __init__(self, url: str, target: Target):
            self.target = target
            super().__init__(url, region=target.region, account=target.account)

    def plain(method):
        def call(self, name, *args, **kwargs):
            return method(self, self.target.public(name), *args, **kwargs)
        call.__name__ = method.__name__
        return call

    for method in ("repository", "digest_of", "start_scan", "image", "put_image",
                   "images_by_digest", "image_by_digest", "manifests", "references_blob",
                   "create_from_template"):
        setattr(TargetMoto, method, plain(getattr(Moto, method)))
    return TargetMoto
