// The Flex Consumption plan (one app per plan) and the function app. Every connection uses the app's
// user-assigned identity: host storage, the deployment package, the exporter's storage, Key Vault and
// Application Insights. No secret is stored in an app setting.
param name string
param planName string
param location string
param tags object = {}
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param queueEndpoint string
param deploymentContainer string
param applicationInsightsConnectionString string
param keyVaultUri string
param exportTimerSchedule string
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
param segmentsContainer string = 'segments'
param resultsContainer string = 'results'
param stateContainer string = 'state'
@description('Entra app registration for App Service authentication; empty leaves authentication off.')
param authClientId string = ''
param authTenantId string = tenant().tenantId

// The site's own host name, for settings that must name it (the site cannot reference itself).
var hostName = '${name}.azurewebsites.net'
var oauthRedirectUri = 'https://${hostName}/api/oauth/callback'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy on Flex Consumption needs always-ready instances (billed while idle) and is offered in a subset of regions; the exporter's runs are checkpointed and resumed by the timer, so losing a zone delays a run, it does not lose one.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Client certificates would break Event Grid delivery to the blob-trigger webhook, which presents none.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; the timer trigger resumes any run an instance loss interrupted.
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not support App Service health checks (healthCheckPath); it replaces unhealthy instances itself. GET /api/health is there for external probes.
  // checkov:skip=CKV_AZURE_222: Event Grid must reach the blob-trigger webhook and operators the HTTP API; without VNet integration and a private endpoint (not created here) the app needs its public endpoint. HTTP routes require a function key, and the management API also an Entra token when authClientId is set.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'exporter' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
      appSettings: [
        // Host storage (keys, timer and blob-trigger bookkeeping) through the identity.
        { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
        // The exporter's storage: the blob trigger's connection "EXPORTER_STORAGE" and the app's own clients.
        { name: 'EXPORTER_STORAGE__accountName', value: storageAccountName }
        { name: 'EXPORTER_STORAGE__blobServiceUri', value: blobEndpoint }
        { name: 'EXPORTER_STORAGE__queueServiceUri', value: queueEndpoint }
        { name: 'EXPORTER_STORAGE__credential', value: 'managedidentity' }
        { name: 'EXPORTER_STORAGE__clientId', value: identityClientId }
        { name: 'SEGMENTS_CONTAINER', value: segmentsContainer }
        { name: 'RESULTS_CONTAINER', value: resultsContainer }
        { name: 'STATE_CONTAINER', value: stateContainer }
        { name: 'EXPORT_TIMER_SCHEDULE', value: exportTimerSchedule }
        // Constant Contact credentials live in Key Vault; DefaultAzureCredential picks the identity by client ID.
        { name: 'EXPORTER_SECRET_STORE', value: 'keyvault' }
        { name: 'KEY_VAULT_URL', value: keyVaultUri }
        { name: 'AZURE_CLIENT_ID', value: identityClientId }
        // Telemetry with Entra auth: the host reads the authentication string, exporter.observability too.
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: applicationInsightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
        // Where Constant Contact sends the browser back after a connection is authorized (register it there).
        { name: 'EXPORTER_OAUTH_REDIRECT_URI', value: oauthRedirectUri }
      ]
    }
  }
}

// azd deploys with Entra ID (One Deploy); basic-auth publishing credentials stay off.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

// App Service authentication in front of the management API: validates Entra tokens and hands the app the
// caller's app roles (exporter.principals). Paths that cannot carry an Entra token stay outside it, each still
// behind its own key: the blob-trigger webhook (Event Grid; blobs_extension key), Constant Contact's OAuth
// redirect (single-use state + PKCE), health and the OpenAPI document (function key).
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  // checkov:skip=CKV_AZURE_13: This resource is the App Service authentication (authsettingsV2, platform.enabled: true); the check only recognises the legacy authsettings resource's top-level enabled flag.
  // checkov:skip=CKV_AZURE_63: checkov applies its config/web checks to every Microsoft.Web/sites/config resource; this one is authsettingsV2, which has no HTTP-logging property. App logs go to Application Insights.
  // checkov:skip=CKV_AZURE_65: A config/web check (detailed error pages) misapplied to this authsettingsV2 resource; errors are logged to Application Insights.
  // checkov:skip=CKV_AZURE_66: A config/web check (failed request tracing, an IIS feature) misapplied to this authsettingsV2 resource; requests are traced in Application Insights.
  // checkov:skip=CKV_AZURE_80: A config/web check (.NET Framework version) misapplied to this authsettingsV2 resource; the app runs Python 3.11 (functionAppConfig.runtime).
  // checkov:skip=CKV_AZURE_88: A config/web check (Azure Files mounts) misapplied to this authsettingsV2 resource; Flex Consumption apps keep no state on a file share.
  // checkov:skip=CKV_AZURE_222: A config/web check misapplied to this authsettingsV2 resource; for the site itself see the same suppression on the site.
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/blobs'
        '/api/oauth/callback'
        '/api/health'
        '/api/openapi.json'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output id string = site.id
output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
output planId string = plan.id
output oauthRedirectUri string = oauthRedirectUri
