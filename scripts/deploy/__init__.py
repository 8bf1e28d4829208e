"""Deploy the scoring service to Azure the way the seed does, and clean up after it.

``python -m scripts.deploy SUBCOMMAND [--dry-run] ...`` with the subcommands

- ``deploy``: the public-key container in the storage account, then the Azure ML managed online
  endpoint and its ``blue`` deployment (``--target endpoint``, the default), or the service image
  built in Azure (``az acr build``) and run on plain Azure Container Instances (``--target aci``);
- ``status``: what is deployed and its recent log;
- ``smoke``: one real encrypted prediction through the app's own client (``lib.cli predict``);
- ``teardown``: the seed's clean-up: the endpoint (or the container group) and the key blobs.

Every subcommand is a list of Azure CLI calls (``plan.py``); ``--dry-run`` prints them and does
nothing else. It needs the Azure CLI with the ``ml`` extension, ``az login``, a subscription, a
resource group, an Azure ML workspace (endpoint target) or a container registry (aci target), and a
storage account for the public keys.
"""
