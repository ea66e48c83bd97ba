"""The deployment templates: every Bicep file parses, checkov finds nothing it is not told why to ignore,
and the properties the security story rests on are there and stay there.

pycep-parser and checkov live in their own virtualenv (.venv-infra, `make infra-setup`; their pins clash
with requirements-dev.txt), so this test runs scripts/check_infra.py there once and reads its JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
INFRA_PYTHON = Path(os.environ.get("INFRA_PYTHON") or ROOT / ".venv-infra" / "bin" / "python")

ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "b86a8fe4-95ff-4a1f-bf4c-d11e3f83f3b9": "Key Vault Secrets Officer",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"

# Every suppression is reviewed: adding one means adding it here, next to its reason in the template.
EXPECTED_SUPPRESSIONS = {
    ("CKV_AZURE_35", "Microsoft.Storage/storageAccounts.account"),  # firewall default Allow (no VNet)
    ("CKV_AZURE_59", "Microsoft.Storage/storageAccounts.account"),  # public network access (no VNet)
    ("CKV_AZURE_109", "Microsoft.KeyVault/vaults.vault"),  # vault firewall default Allow (no VNet)
    ("CKV_AZURE_189", "Microsoft.KeyVault/vaults.vault"),  # vault public network access is a parameter
    ("CKV_AZURE_225", "Microsoft.Web/serverfarms.plan"),  # zone redundancy needs paid always-ready
    ("CKV_AZURE_222", "Microsoft.Web/sites.site"),  # Event Grid must reach the webhook
    ("CKV_AZURE_17", "Microsoft.Web/sites.site"),  # client certs would block Event Grid
    ("CKV_AZURE_212", "Microsoft.Web/sites.site"),  # Flex scales from zero
    ("CKV_AZURE_213", "Microsoft.Web/sites.site"),  # Flex has no App Service health check
    # config/web checks that checkov applies to every sites/config resource, here authsettingsV2
    *(
        (check, "Microsoft.Web/sites/config.auth")
        for check in (
            "CKV_AZURE_13",
            "CKV_AZURE_63",
            "CKV_AZURE_65",
            "CKV_AZURE_66",
            "CKV_AZURE_80",
            "CKV_AZURE_88",
            "CKV_AZURE_222",
        )
    ),
}


@pytest.fixture(scope="module")
def infra() -> dict[str, Any]:
    if not INFRA_PYTHON.exists():
        pytest.skip(f"infra virtualenv missing ({INFRA_PYTHON}): run `make infra-setup` to install checkov")
    done = subprocess.run(
        [str(INFRA_PYTHON), str(ROOT / "scripts" / "check_infra.py"), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.stdout, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def template(infra: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = infra["templates"][name]
    return found


def resource(infra: dict[str, Any], file: str, name: str) -> dict[str, Any]:
    """A resource's body, looking through `if (...)` and `for` wrappers."""
    config: dict[str, Any] = template(infra, file)["resources"][name]["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def dotted(node: Any) -> Any:
    """pycep's property access ({"operator": {"type": "property_accessor", ...}}) as ``a.b.c``."""
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        return f"{dotted(operands['operand_1'])}.{dotted(operands['operand_2'])}"
    return node


def params_default(infra: dict[str, Any], file: str, name: str) -> Any:
    return template(infra, file)["parameters"][name].get("default")


def decorators(infra: dict[str, Any], file: str, name: str) -> dict[str, Any]:
    return {d["type"]: d.get("argument") for d in template(infra, file)["parameters"][name]["decorators"]}


# -- parsing and checkov ------------------------------------------------------------------------------


def test_every_bicep_file_parses(infra):
    on_disk = {p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep")}
    assert infra["parse_errors"] == {}
    assert set(infra["templates"]) == on_disk
    assert {"main.bicep", "blob-subscription.bicep"} <= on_disk


def test_checkov_has_no_failed_check_and_every_suppression_has_a_reason(infra):
    checkov = infra["checkov"]
    assert checkov["failed"] == [], "\n".join(
        f"{c['id']} {c['resource']}: {c['name']}" for c in checkov["failed"]
    )
    assert checkov["parsing_errors"] == []
    assert len(checkov["passed"]) >= 20
    assert {(c["id"], c["resource"]) for c in checkov["skipped"]} == EXPECTED_SUPPRESSIONS
    assert all(len(c["reason"]) >= 20 for c in checkov["skipped"])
    assert infra["problems"] == []


# -- storage, vault, monitoring -----------------------------------------------------------------------


def test_storage_takes_identities_only(infra):
    props = resource(infra, "modules/storage.bicep", "account")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    containers = resource(infra, "modules/storage.bicep", "blobContainers")
    assert containers["properties"]["publicAccess"] == "None"
    blob_service = resource(infra, "modules/storage.bicep", "blobService")["properties"]
    assert blob_service["isVersioningEnabled"] == "enableVersioning"
    assert params_default(infra, "modules/storage.bicep", "enableVersioning") is True
    assert params_default(infra, "main.bicep", "enableBlobVersioning") is True
    assert blob_service["containerDeleteRetentionPolicy"]["enabled"] is True


def test_the_three_exporter_containers_and_the_deployment_container_are_created(infra):
    module = template(infra, "main.bicep")["modules"]["storage"]["config"]["params"]
    assert module["containers"] == [
        "segmentsContainer",
        "resultsContainer",
        "stateContainer",
        "deploymentContainer",
    ]
    defaults = {
        name: params_default(infra, "main.bicep", f"{name}Container")
        for name in ("segments", "results", "state")
    }
    assert defaults == {"segments": "segments", "results": "results", "state": "state"}


def test_key_vault_uses_rbac_and_cannot_be_purged(infra):
    props = resource(infra, "modules/keyvault.bicep", "vault")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props
    assert props["publicNetworkAccess"] == "publicNetworkAccess"
    assert decorators(infra, "main.bicep", "keyVaultPublicNetworkAccess")["allowed"] == [
        "Enabled",
        "Disabled",
    ]


def test_application_insights_accepts_entra_authenticated_telemetry_only(infra):
    props = resource(infra, "modules/monitoring.bicep", "appInsights")["properties"]
    assert props["DisableLocalAuth"] is True
    assert dotted(props["WorkspaceResourceId"]) == "workspace.id"
    assert resource(infra, "modules/monitoring.bicep", "workspace")["properties"]["retentionInDays"]


# -- identity and roles --------------------------------------------------------------------------------


def _role_of(assignment: dict[str, Any]) -> str:
    accessor = assignment["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    return str(dotted(accessor)).removeprefix("roleIds.")


def test_the_app_identity_has_exactly_the_four_roles_it_needs(infra):
    roles = template(infra, "modules/roles.bicep")
    role_ids: dict[str, str] = roles["variables"]["roleIds"]["value"]
    by_principal: dict[str, list[tuple[str, str]]] = {}
    for name, entry in roles["resources"].items():
        if entry["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        body = resource(infra, "modules/roles.bicep", name)
        role_id = role_ids[_role_of(body)]
        by_principal.setdefault(body["properties"]["principalId"], []).append((role_id, body["scope"]))
    app = sorted(by_principal.pop("identityPrincipalId"))
    assert app == sorted(
        [
            ("b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "storage"),  # Storage Blob Data Owner on the account
            ("974c5e8b-45b9-4653-ba55-5f855dd0fb88", "storage"),  # Storage Queue Data Contributor
            ("b86a8fe4-95ff-4a1f-bf4c-d11e3f83f3b9", "vault"),  # Key Vault Secrets Officer on the vault
            ("3913510d-42f4-4e42-8a64-420c390055eb", "appInsights"),  # Monitoring Metrics Publisher
        ]
    )
    assert {role for role, _ in app} == set(ROLE_IDS)
    # Anyone else only when their ID is given: the operator (CLI management works on storage and vault
    # directly) and Customer Insights, which may write to the segments container and nowhere else.
    assert set(by_principal) == {"operatorPrincipalId", "customerInsightsPrincipalId"}
    assert sorted(by_principal["operatorPrincipalId"]) == [
        ("b86a8fe4-95ff-4a1f-bf4c-d11e3f83f3b9", "vault"),
        (STORAGE_BLOB_DATA_CONTRIBUTOR, "storage"),
    ]
    assert by_principal["customerInsightsPrincipalId"] == [(STORAGE_BLOB_DATA_CONTRIBUTOR, "segments")]
    for name, entry in roles["resources"].items():
        if name.startswith(("operator", "customerInsights")):
            assert entry["config"]["condition"] is not None, f"{name} must be conditional"


def test_the_function_app_runs_as_its_user_assigned_identity(infra):
    site = resource(infra, "modules/functionapp.bicep", "site")
    assert site["identity"]["type"] == "UserAssigned"
    auth = site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}


# -- the function app ------------------------------------------------------------------------------------


def test_flex_consumption_python_311_with_a_bounded_instance_count(infra):
    plan = resource(infra, "modules/functionapp.bicep", "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    site = resource(infra, "modules/functionapp.bicep", "site")
    assert site["kind"] == "functionapp,linux"
    assert dotted(site["properties"]["serverFarmId"]) == "plan.id"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["scaleAndConcurrency"]["maximumInstanceCount"] == "maximumInstanceCount"
    assert config["scaleAndConcurrency"]["instanceMemoryMB"] == "instanceMemoryMB"
    assert params_default(infra, "main.bicep", "instanceMemoryMB") == 2048
    for file in ("main.bicep", "modules/functionapp.bicep"):
        bounds = decorators(infra, file, "maximumInstanceCount")
        assert 1 <= bounds["min_value"] <= params_default(infra, file, "maximumInstanceCount")
        assert params_default(infra, file, "maximumInstanceCount") <= bounds["max_value"] <= 1000
    # one app per plan: the module creates exactly one site
    sites = [
        r
        for r in template(infra, "modules/functionapp.bicep")["resources"].values()
        if r["type"] == "Microsoft.Web/sites"
    ]
    assert len(sites) == 1


def test_https_only_and_no_basic_auth_publishing(infra):
    site = resource(infra, "modules/functionapp.bicep", "site")
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    assert site["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    for name in ("scmBasicAuth", "ftpBasicAuth"):
        assert resource(infra, "modules/functionapp.bicep", name)["properties"]["allow"] is False


def _app_settings(infra: dict[str, Any]) -> dict[str, Any]:
    site = resource(infra, "modules/functionapp.bicep", "site")
    return {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}


def test_app_settings_connect_everything_through_the_identity(infra):
    settings = _app_settings(infra)
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["EXPORTER_STORAGE__credential"] == "managedidentity"
    assert settings["EXPORTER_STORAGE__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["EXPORTER_SECRET_STORE"] == "keyvault"
    assert settings["KEY_VAULT_URL"] == "keyVaultUri"
    assert (
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        == "ClientId=${identityClientId};Authorization=AAD"
    )
    assert settings["EXPORT_TIMER_SCHEDULE"] == "exportTimerSchedule"
    for name in (
        "AzureWebJobsStorage__accountName",
        "EXPORTER_STORAGE__accountName",
        "EXPORTER_STORAGE__blobServiceUri",
        "EXPORTER_STORAGE__queueServiceUri",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "SEGMENTS_CONTAINER",
        "RESULTS_CONTAINER",
        "STATE_CONTAINER",
    ):
        assert name in settings
    # No key, connection string or secret in any setting; Flex sets the runtime itself.
    text = json.dumps(settings)
    assert not re.search(r"AccountKey|SharedAccessSignature|listKeys|DefaultEndpointsProtocol", text)
    assert "FUNCTIONS_WORKER_RUNTIME" not in settings and "WEBSITE_RUN_FROM_PACKAGE" not in settings
    assert "SEGMENTS_BLOB_SOURCE" not in settings  # Azure uses the Event Grid source
    # Only App Service authentication may vouch for a caller: trusting the header by setting would let
    # anyone holding a function key claim any role.
    assert "EXPORTER_TRUST_PRINCIPAL_HEADER" not in settings


def test_management_api_sits_behind_app_service_authentication_when_configured(infra):
    entry = template(infra, "modules/functionapp.bicep")["resources"]["auth"]
    assert entry["config"]["condition"] is not None  # only with an app registration (authClientId)
    auth = resource(infra, "modules/functionapp.bicep", "auth")
    assert auth["name"] == "authsettingsV2"
    validation = auth["properties"]["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    source = (ROOT / "function_app.py").read_text()
    # Excluded: what cannot carry an Entra token. Each must exist, so a renamed route cannot silently open.
    assert set(validation["excludedPaths"]) == {
        "/runtime/webhooks/blobs",
        "/api/oauth/callback",
        "/api/health",
        "/api/openapi.json",
    }
    for route in ("oauth/callback", "health", "openapi.json"):
        assert f'route="{route}"' in source
    aad = auth["properties"]["identityProviders"]["azureActiveDirectory"]
    assert aad["registration"]["clientId"] == "authClientId"
    assert "api://${authClientId}" in aad["validation"]["allowedAudiences"]
    assert auth["properties"]["login"]["tokenStore"]["enabled"] is False
    settings = _app_settings(infra)
    assert settings["EXPORTER_OAUTH_REDIRECT_URI"] == "oauthRedirectUri"
    variables = template(infra, "modules/functionapp.bicep")["variables"]
    assert variables["oauthRedirectUri"]["value"] == "https://${hostName}/api/oauth/callback"


def test_every_setting_function_app_py_binds_to_is_provided(infra):
    settings = _app_settings(infra)
    source = (ROOT / "function_app.py").read_text()
    for name in re.findall(r"%([A-Z_][A-Z0-9_]*)%", source):
        assert name in settings, f"function_app.py binds %{name}% but the app has no such setting"
    for connection in re.findall(r'connection="([A-Za-z0-9_]+)"', source):
        assert f"{connection}__accountName" in settings or f"{connection}__blobServiceUri" in settings


def test_timer_schedule_and_names_are_parameters_and_endpoints_are_outputs(infra):
    main = template(infra, "main.bicep")
    params = main["parameters"]
    for name in (
        "environmentName",
        "location",
        "exportTimerSchedule",
        "functionAppName",
        "storageAccountName",
        "keyVaultName",
    ):
        assert name in params
    assert params["exportTimerSchedule"]["default"] == "0 */5 * * * *"
    outputs = main["outputs"]
    for name in (
        "AZURE_FUNCTION_APP_URL",
        "EXPORTER_API_URL",
        "AZURE_STORAGE_BLOB_ENDPOINT",
        "AZURE_KEY_VAULT_URL",
        "EVENTGRID_SYSTEM_TOPIC_NAME",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
    ):
        assert name in outputs
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(parameters) <= set(params), "main.parameters.json sets a parameter main.bicep does not have"


# -- Event Grid --------------------------------------------------------------------------------------------


def test_the_event_grid_subscription_feeds_blob_created_in_segments_to_the_blob_trigger(infra):
    topic = resource(infra, "modules/eventgrid.bicep", "topic")
    assert topic["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    subscription = resource(infra, "blob-subscription.bicep", "subscription")
    assert subscription["parent"] == "topic"
    props = subscription["properties"]
    assert props["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert (
        props["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/${segmentsContainer}/blobs/"
    )
    assert params_default(infra, "blob-subscription.bicep", "segmentsContainer") == "segments"
    endpoint = props["destination"]["properties"]["endpointUrl"]
    assert props["destination"]["endpointType"] == "WebHook"
    assert endpoint.startswith("https://${site.properties.defaultHostName}/runtime/webhooks/blobs?")
    assert "functionName=Host.Functions.${functionName}" in endpoint
    assert "listKeys('${site.id}/host/default'" in endpoint and "systemKeys.blobs_extension" in endpoint
    function = params_default(infra, "blob-subscription.bicep", "functionName")
    assert re.search(rf"^def {function}\(", (ROOT / "function_app.py").read_text(), re.M)
    assert "outputs" not in template(infra, "blob-subscription.bicep") or all(
        "listKeys" not in json.dumps(o)
        for o in template(infra, "blob-subscription.bicep")["outputs"].values()
    )


# -- azd --------------------------------------------------------------------------------------------------


def test_azure_yaml_provisions_deploys_and_then_subscribes():
    spec = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert spec["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    (service,) = spec["services"].values()
    assert service == {"project": ".", "language": "python", "host": "function"}
    hooks = spec["hooks"]["postdeploy"]
    posix = ROOT / hooks["posix"]["run"]
    windows = ROOT / hooks["windows"]["run"]
    assert posix.exists() and os.access(posix, os.X_OK) and windows.exists()
    assert "blob-subscription.bicep" in posix.read_text() and "blob-subscription.bicep" in windows.read_text()
    subprocess.run(["sh", "-n", str(posix)], check=True)
    # azd finds the app by this tag
    site = (INFRA / "modules" / "functionapp.bicep").read_text()
    (name,) = spec["services"]
    assert f"'azd-service-name': '{name}'" in site
