#!/usr/bin/env python3
"""Put test files into a local object-store server: the tests of remote inputs (s3://, az://, gs://)
upload fixtures with this, then read them with `nomaly`.

    store_fixture.py s3    http://127.0.0.1:PORT BUCKET DIR   (moto_server; any S3-compatible server)
    store_fixture.py azure http://127.0.0.1:PORT CONTAINER DIR (Azurite, its well-known dev account)
    store_fixture.py gcs   http://127.0.0.1:PORT BUCKET DIR   (gcp-storage-emulator)

Every file under DIR is uploaded under its path relative to DIR; the bucket or container is created
first. The tests of remote outputs read back what `nomaly` wrote with

    store_fixture.py s3-get http://127.0.0.1:PORT BUCKET PREFIX DIR

which downloads every object under PREFIX to DIR (paths relative to PREFIX) and prints their names.
Runs with the interpreter of the test-services environment (scripts/test-services.sh).
"""

import json
import pathlib
import sys
import urllib.parse
import urllib.request

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def files(root):
    base = pathlib.Path(root)
    return sorted((p.relative_to(base).as_posix(), p) for p in base.rglob("*") if p.is_file())


def s3_client(endpoint):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="nomaly",
        aws_secret_access_key="nomaly-secret",
        region_name="us-east-1",
    )


def put_s3(endpoint, bucket, root):
    s3 = s3_client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass  # a later batch into the same bucket
    for key, path in files(root):
        s3.upload_file(str(path), bucket, key)


def get_s3(endpoint, bucket, prefix, root):
    s3 = s3_client(endpoint)
    prefix = prefix.strip("/") + "/"
    names = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            target = pathlib.Path(root) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            names.append(rel)
    print("\n".join(sorted(names)))


def put_azure(endpoint, container, root):
    from azure.storage.blob import BlobServiceClient

    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )
    service = BlobServiceClient.from_connection_string(conn)
    client = service.create_container(container)
    for key, path in files(root):
        with open(path, "rb") as f:
            client.upload_blob(key, f, overwrite=True)


def put_gcs(endpoint, bucket, root):
    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(req).read()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already there
            raise
    for key, path in files(root):
        name = urllib.parse.quote(key, safe="")
        req = urllib.request.Request(
            f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
            data=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
            method="POST",
        )
        urllib.request.urlopen(req).read()


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "s3-get":
        get_s3(sys.argv[2].rstrip("/"), *sys.argv[3:])
        return
    if len(sys.argv) != 5 or sys.argv[1] not in ("s3", "azure", "gcs"):
        sys.exit(__doc__)
    kind, endpoint, bucket, root = sys.argv[1:]
    {"s3": put_s3, "azure": put_azure, "gcs": put_gcs}[kind](endpoint.rstrip("/"), bucket, root)


if __name__ == "__main__":
    main()
