"""Creates a blob container in Azurite and prints a container SAS URL for it; with --list,
prints the container's blobs and their metadata as JSON instead (the checkpoints and
ownerships the Event Hubs processor wrote).

    python3 azurite_container.py http://127.0.0.1:10000/devstoreaccount1 checkpoints [--list]
"""
import datetime
import json
import sys

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main():
    endpoint, container = sys.argv[1], sys.argv[2]
    service = BlobServiceClient(endpoint, credential={"account_name": ACCOUNT, "account_key": KEY})
    client = service.get_container_client(container)
    if "--list" in sys.argv[3:]:
        blobs = {b.name: b.metadata for b in client.list_blobs(include=["metadata"])}
        print(json.dumps(blobs, sort_keys=True))
        return
    if not client.exists():
        client.create_container()
    sas = generate_container_sas(
        ACCOUNT, container, account_key=KEY,
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1),
    )
    print(f"{endpoint}/{container}?{sas}")


if __name__ == "__main__":
    main()
