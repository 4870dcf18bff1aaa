// milink on Azure: the Function App that runs the custom handler, its storage (host + state tables),
// the Service Bus stage queues, Application Insights, and one user-assigned managed identity with exactly
// the roles the handler needs. See docs/azure.md for how to deploy and configure it.
//
// Why these choices:
// - Elastic Premium (EP1) on Linux: steps may run for minutes (create-link, a large assessment, a drain
//   with a long timeout), and host.json sets functionTimeout to 1 hour; Premium allows it (Consumption
//   stops at 10 minutes), scales out on queue length, and can join a VNet to reach private database servers.
// - Service Bus Standard: the first tier with sessions (one migration's steps in order) and duplicate
//   detection (a message sent by both its committer and the relay is kept once).
// - One identity for everything, so there are no keys in app settings except the Functions content share,
//   which Azure Files still requires as a connection string on Premium plans.

targetScope = 'resourceGroup'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Short prefix for resource names (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param prefix string = 'milink'

@description('Function App name (globally unique).')
param functionAppName string = '${prefix}-func-${uniqueString(resourceGroup().id)}'

@description('Storage account name (globally unique, 3-24 lowercase letters and digits).')
param storageAccountName string = '${prefix}st${uniqueString(resourceGroup().id)}'

@description('Service Bus namespace name (globally unique).')
param serviceBusNamespaceName string = '${prefix}-sb-${uniqueString(resourceGroup().id)}'

@description('Elastic Premium plan size.')
@allowed(['EP1', 'EP2', 'EP3'])
param planSku string = 'EP1'

@description('Most instances the plan scales out to.')
param maximumInstances int = 20

@description('Deliveries of one message before Service Bus dead-letters it (the handler retries by itself before that; this catches crash loops and undecodable messages).')
param maxDeliveryCount int = 10

@description('How long Service Bus remembers message ids to drop duplicates (ISO 8601). Set explicitly: defaults differ between APIs (10 minutes vs 1 minute). One hour covers a relay that was down for an hour.')
param duplicateDetectionWindow string = 'PT1H'

@description('Resource id of the target SQL Managed Instance (empty when migrating PostgreSQL only).')
param targetManagedInstanceId string = ''

@description('On the target instance, grant the narrower custom role of reference/mi-link.md §1.3 instead of SQL Managed Instance Contributor.')
param useCustomManagedInstanceRole bool = false

@description('Name of an existing Key Vault holding connection passwords, in this resource group (empty: none). The identity gets Key Vault Secrets User on it and app settings may use @Microsoft.KeyVault(...) references.')
param keyVaultName string = ''

@description('Prefix of the state tables (milinkMigrations, milinkAssessments, ...).')
param tablePrefix string = 'milink'

var stages = ['assess', 'migration', 'notify']
var queuePrefix = 'milink-'
var tables = ['Migrations', 'Assessments', 'Connections', 'DeadLetters']

// Built-in role definition ids.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-identity'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
    // The Premium plan's content share (Azure Files) still needs a key; everything milink does uses the identity.
    allowSharedKeyAccess: true
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource stateTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for table in tables: {
  parent: tableService
  name: '${tablePrefix}${table}'
}]

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: serviceBusNamespaceName
  location: location
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    minimumTlsVersion: '1.2'
    // Entra only: the handler sends with its identity, the trigger receives with it.
    disableLocalAuth: true
  }
}

resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for stage in stages: {
  parent: serviceBus
  name: '${queuePrefix}${stage}'
  properties: {
    requiresSession: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    // The longest lock Service Bus allows; the Functions host renews it up to maxAutoLockRenewalDuration.
    lockDuration: 'PT5M'
    defaultMessageTimeToLive: 'P14D'
    enablePartitioning: false
  }
}]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-logs'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-insights'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
  }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${prefix}-plan'
  location: location
  kind: 'elastic'
  sku: { name: planSku, tier: 'ElasticPremium' }
  properties: {
    reserved: true // Linux
    maximumElasticWorkerCount: maximumInstances
  }
}

var storageKey = storage.listKeys().keys[0].value
var contentConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storageKey};EndpointSuffix=${environment().suffixes.storage}'

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: functionAppName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      // Custom handlers have no language stack: the host runs our binary (host.json).
      linuxFxVersion: ''
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      appSettings: [
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'custom' }
        { name: 'WEBSITE_RUN_FROM_PACKAGE', value: '1' }
        { name: 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING', value: contentConnection }
        { name: 'WEBSITE_CONTENTSHARE', value: toLower(functionAppName) }
        // Host storage (timer leases, Service Bus checkpoints) through the identity.
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        // The Service Bus trigger's connection (function.json "connection": "ServiceBusConnection").
        { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
        { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
        { name: 'ServiceBusConnection__clientId', value: identity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        // milink's own settings (functions/src/azure/settings.rs).
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        { name: 'MILINK_STORAGE_ACCOUNT', value: storage.name }
        { name: 'MILINK_TABLE_ENDPOINT', value: storage.properties.primaryEndpoints.table }
        { name: 'MILINK_TABLE_PREFIX', value: tablePrefix }
        { name: 'MILINK_SERVICEBUS_URL', value: 'https://${serviceBus.name}.servicebus.windows.net' }
        { name: 'MILINK_QUEUE_PREFIX', value: queuePrefix }
        { name: 'MILINK_CONFIG', value: 'milink.toml' }
      ]
    }
  }
}

// Role assignments: names are deterministic so redeploying does not duplicate them.
resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]: {
  name: guid(storage.id, identity.id, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource busRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [roles.serviceBusDataSender, roles.serviceBusDataReceiver]: {
  name: guid(serviceBus.id, identity.id, role)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (!empty(keyVaultName)) {
  name: empty(keyVaultName) ? 'unused' : keyVaultName
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(keyVaultName)) {
  name: guid(resourceGroup().id, keyVaultName, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The target Managed Instance usually lives in another resource group: a module scoped there.
module managedInstanceRole 'modules/managed-instance-role.bicep' = if (!empty(targetManagedInstanceId)) {
  name: 'milink-mi-role'
  // ARM evaluates a module's scope even when its condition is false: with the default '' the split has no
  // [2] or [4] and validation fails, so the scope falls back to this deployment's own group then.
  scope: resourceGroup(empty(targetManagedInstanceId) ? subscription().subscriptionId : split(targetManagedInstanceId, '/')[2], empty(targetManagedInstanceId) ? resourceGroup().name : split(targetManagedInstanceId, '/')[4])
  params: {
    managedInstanceName: last(split(targetManagedInstanceId, '/'))
    principalId: identity.properties.principalId
    useCustomRole: useCustomManagedInstanceRole
  }
}

output functionAppName string = app.name
output functionAppUrl string = 'https://${app.properties.defaultHostName}/api'
output identityClientId string = identity.properties.clientId
output serviceBusNamespace string = '${serviceBus.name}.servicebus.windows.net'
output storageAccount string = storage.name
