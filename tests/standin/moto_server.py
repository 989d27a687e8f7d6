"""moto's server for the ECR API, with fixes that make it behave like ECR.

When `PutImage` moves a tag to a new manifest, moto 5.2 deletes the image the tag used to
name (through `BatchDeleteImage`, which deletes an image whose last tag goes). ECR, and
the registry behind the front, keep that image, untagged. Runs that race for one tag must
each find their own image by digest afterwards, so here a moved tag is only taken off the
old image.

moto 5.2 reports an image manifest's `imageSizeInBytes` as its config's size, and none for
an index. ECR reports the size of the image in the repository: the sum of its (compressed)
layers, and for a manifest list "the max size of all manifests in the list" (API reference,
`ImageDetail`), here the largest of the index's manifests held in the same repository.

moto 5.2 knows the tag-mutability exclusions of July 2025 (MUTABLE_WITH_EXCLUSION,
IMMUTABLE_WITH_EXCLUSION), but matches a WILDCARD filter as a regular expression's
prefix, checks neither the filters' number nor their pattern, lets PutImageTagMutability
pair filters with a plain value, and leaves the filters out of its answer. Here a filter
matches the whole tag with `*` as the only wildcard (API reference,
ImageTagMutabilityExclusionFilter: WILDCARD, [0-9a-zA-Z._*-]{1,128}, 1 to 5 of them), and
a tag an exclusion filter matches has the opposite mutability.

moto 5.2's KMS `Sign` and `Verify` ignore `MessageType`: a DIGEST is hashed again, so its
signatures of a digest verify with nothing else. Here `MessageType=DIGEST` signs the digest
as given (KMS API reference,
Sign: "If you specify DIGEST, AWS KMS skips the hashing step"; the digest must be as long
as the signing algorithm's hash), so a signature verifies with the key's public key, as
cosign's awskms signer (MessageType DIGEST) needs.
"""

import json
import re
import sys
import threading

from moto.ecr.exceptions import ImageAlreadyExistsException
from moto.ecr.models import ECRBackend, Image
from moto.server import main

_moving = threading.local()
_put_image = ECRBackend.put_image
_batch_delete_image = ECRBackend.batch_delete_image


def put_image(self, *args, **kwargs):
    _moving.active = True
    try:
        image = _put_image(self, *args, **kwargs)
    finally:
        _moving.active = False
    # The index's size is its manifests': the image must find them in its repository.
    image.backend = self
    return image


def batch_delete_image(self, repository_name, registry_id=None, image_ids=None):
    if not getattr(_moving, "active", False):
        return _batch_delete_image(self, repository_name, registry_id, image_ids)
    # Called by put_image to move a tag: untag, never delete.
    repository = self.repositories[repository_name]
    for image_id in image_ids or []:
        tag = image_id.get("imageTag")
        for image in repository.images:
            if tag in image.image_tags:
                image.remove_tag(tag)
                if not image.image_tags:
                    image.image_tag = None
    return {"imageIds": [], "failures": []}


def get_image_size_in_bytes(self):
    manifest = json.loads(self.image_manifest)
    if "layers" in manifest:
        return sum(layer.get("size", 0) for layer in manifest["layers"])
    backend = getattr(self, "backend", None)
    repository = backend and backend.repositories.get(self.repository_name)
    if repository is None or "manifests" not in manifest:
        return None
    by_digest = {image.image_digest: image for image in repository.images}
    sizes = [
        by_digest[entry["digest"]].get_image_size_in_bytes()
        for entry in manifest["manifests"]
        if entry.get("digest") in by_digest
    ]
    sizes = [size for size in sizes if size is not None]
    return max(sizes) if sizes else None


FILTER_VALUE = re.compile(r"^[0-9a-zA-Z._*-]{1,128}$")


def wildcard_match(pattern, tag):
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), tag) is not None


def tag_is_immutable(repository, tag):
    immutable = repository.image_tag_mutability.startswith("IMMUTABLE")
    filters = repository.image_tag_mutability_exclusion_filters or []
    if repository.image_tag_mutability.endswith("_WITH_EXCLUSION") and any(
        wildcard_match(f["filter"], tag) for f in filters
    ):
        return not immutable
    return immutable


def resolve_image_tag_mutability(self, repository, proposed_image_tag):
    existing = [i for i in repository.images if proposed_image_tag in i.image_tags]
    if existing and proposed_image_tag and tag_is_immutable(repository, proposed_image_tag):
        raise ImageAlreadyExistsException(
            registry_id=repository.registry_id,
            image_tag=proposed_image_tag,
            digest=existing[0].get_image_digest(),
            repository_name=repository.name,
        )
    return existing


def validate_mutability_exclusion_filters(self, filters):
    if filters is None:
        return None
    if not isinstance(filters, list) or not 1 <= len(filters) <= 5:
        return "'Member must have length less than or equal to 5 and greater than or equal to 1'"
    for f in filters:
        if not isinstance(f, dict) or set(f) != {"filterType", "filter"}:
            return "'Each filter must have exactly the members filterType and filter'"
        if f["filterType"] != "WILDCARD":
            return f"Invalid value for 'filterType' in mutability exclusion filter: {f['filterType']}"
        if not isinstance(f["filter"], str) or not FILTER_VALUE.match(f["filter"]):
            return "'Member must satisfy regular expression pattern: ^[0-9a-zA-Z._*-]{1,128}$'"
    return None


_put_image_tag_mutability = ECRBackend.put_image_tag_mutability


def put_image_tag_mutability(
    self, registry_id, repository_name, image_tag_mutability, image_tag_mutability_exclusion_filters=None
):
    errmsg = self._validate_mutability_exclusion_filters(image_tag_mutability_exclusion_filters)
    if errmsg is None:
        self.validate_image_tag_mutability_params_compatibility(
            image_tag_mutability, image_tag_mutability_exclusion_filters
        )
    result = _put_image_tag_mutability(
        self, registry_id, repository_name, image_tag_mutability, image_tag_mutability_exclusion_filters
    )
    if image_tag_mutability_exclusion_filters:
        result["imageTagMutabilityExclusionFilters"] = image_tag_mutability_exclusion_filters
    return result


# --- KMS: real signatures --------------------------------------------------------------

import base64  # noqa: E402

from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, utils as asym_utils  # noqa: E402
from moto.kms import utils as kms_utils  # noqa: E402
from moto.kms.exceptions import ValidationException  # noqa: E402
from moto.kms.responses import KmsResponse  # noqa: E402

_kms = threading.local()
HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def hash_of(signing_algorithm):
    return HASHES.get(str(signing_algorithm)[-3:], hashes.SHA256)()


def prehashed(algorithm):
    """The hash argument cryptography wants: the hash itself for RAW, Prehashed for DIGEST."""
    return asym_utils.Prehashed(algorithm) if getattr(_kms, "digest", False) else algorithm


def ecdsa_sign(self, message, signing_algorithm):
    kms_utils.validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
    return self.private_key.sign(message, ec.ECDSA(prehashed(hash_of(signing_algorithm))))


def ecdsa_verify(self, message, signature, signing_algorithm):
    kms_utils.validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
    try:
        self.private_key.public_key().verify(signature, message, ec.ECDSA(prehashed(hash_of(signing_algorithm))))
        return True
    except InvalidSignature:
        return False


def rsa_sign(self, message, signing_algorithm):
    kms_utils.validate_signing_algorithm(signing_algorithm, kms_utils.SigningAlgorithm.rsa_signing_algorithms())
    pad, algorithm = self._RSAPrivateKey__padding_and_hash_algorithm(signing_algorithm)
    return self.private_key.sign(message, pad, prehashed(algorithm))


def rsa_verify(self, message, signature, signing_algorithm):
    kms_utils.validate_signing_algorithm(signing_algorithm, kms_utils.SigningAlgorithm.rsa_signing_algorithms())
    pad, algorithm = self._RSAPrivateKey__padding_and_hash_algorithm(signing_algorithm)
    try:
        self.private_key.public_key().verify(signature, message, pad, prehashed(algorithm))
        return True
    except InvalidSignature:
        return False


def with_real_message(handler):
    """Decode Message (base64 in the JSON protocol) before moto reads it, and sign or
    verify a DIGEST without hashing it again."""

    def wrapped(self):
        raw = self._get_param("Message")
        message_type = self._get_param("MessageType") or "RAW"
        if message_type not in ("RAW", "DIGEST"):
            raise ValidationException(
                f"1 validation error detected: Value '{message_type}' at 'messageType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [DIGEST, RAW]")
        if isinstance(raw, (bytes, bytearray)):
            message = bytes(raw)  # moto parsed the blob itself
        else:
            try:
                message = base64.b64decode(raw or "", validate=True)
            except ValueError:
                message = (raw or "").encode()
        if message_type == "DIGEST" and message:
            size = hash_of(self._get_param("SigningAlgorithm")).digest_size
            if len(message) != size:
                raise ValidationException(
                    f"Digest is invalid length for algorithm {self._get_param('SigningAlgorithm')}.")
        self._real_message = message
        _kms.digest = message_type == "DIGEST"
        try:
            return handler(self)
        finally:
            _kms.digest = False

    return wrapped


_get_param = KmsResponse._get_param


def get_param(self, name, if_none=None):
    # The decoded Message, as bytes (moto encodes a str it gets to UTF-8 itself).
    if name == "Message" and getattr(self, "_real_message", None) is not None:
        return self._real_message
    return _get_param(self, name, if_none)


KmsResponse._get_param = get_param
KmsResponse.sign = with_real_message(KmsResponse.sign)
KmsResponse.verify = with_real_message(KmsResponse.verify)
kms_utils.ECDSAPrivateKey.sign = ecdsa_sign
kms_utils.ECDSAPrivateKey.verify = ecdsa_verify
kms_utils.RSAPrivateKey.sign = rsa_sign
kms_utils.RSAPrivateKey.verify = rsa_verify

ECRBackend.put_image = put_image
ECRBackend._resolve_image_tag_mutability = resolve_image_tag_mutability
ECRBackend._validate_mutability_exclusion_filters = validate_mutability_exclusion_filters
ECRBackend.put_image_tag_mutability = put_image_tag_mutability
Image.get_image_size_in_bytes = get_image_size_in_bytes
ECRBackend.batch_delete_image = batch_delete_image

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
