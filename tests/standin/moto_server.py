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
"""

import json
import sys
import threading

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


ECRBackend.put_image = put_image
Image.get_image_size_in_bytes = get_image_size_in_bytes
ECRBackend.batch_delete_image = batch_delete_image

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
