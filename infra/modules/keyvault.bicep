// Constant Contact credentials (client ID and secret, the rotating refresh token, the shared access token).
// Access by Azure RBAC only; purge protection so a deleted vault, and the only valid refresh token, can be
// recovered for softDeleteRetentionInDays.
param name string
param location string
param tags object = {}
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Enabled'
param logAnalyticsWorkspaceId string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The firewall's default action is Allow because a Flex Consumption app without VNet integration has no fixed outbound addresses to allow; access still needs an Entra identity holding a Key Vault RBAC role. Set publicNetworkAccess=Disabled with your own private endpoint to close it.
  // checkov:skip=CKV_AZURE_189: Public network access is a parameter (keyVaultPublicNetworkAccess), Enabled by default for the same reason as CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Who read or wrote which secret, and when: the audit trail for the credentials.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'vault-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'audit', enabled: true }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
