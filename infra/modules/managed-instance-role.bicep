// Lets milink's identity manage the MI link on one target SQL Managed Instance: the built-in SQL Managed
// Instance Contributor, or (useCustomRole) a custom role with only the actions the link needs
// (reference/mi-link.md §1.3). Custom roles can be scoped no lower than a resource group, so the role is
// assignable in the instance's resource group and assigned on the instance alone.

@description('Name of the target SQL Managed Instance (in this resource group).')
param managedInstanceName string

@description('Object id of the managed identity.')
param principalId string

@description('Grant the narrow custom role instead of SQL Managed Instance Contributor.')
param useCustomRole bool = false

var sqlManagedInstanceContributor = '4939a1f6-9ae0-4e48-a1e0-f2cbe897382d'

resource instance 'Microsoft.Sql/managedInstances@2023-08-01-preview' existing = {
  name: managedInstanceName
}

resource linkRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (useCustomRole) {
  name: guid(instance.id, 'milink-mi-link-operator')
  properties: {
    roleName: 'milink MI link operator (${managedInstanceName})'
    description: 'What milink needs to create, watch, fail over and remove an MI link on this instance.'
    type: 'CustomRole'
    assignableScopes: [resourceGroup().id]
    permissions: [
      {
        actions: [
          'Microsoft.Sql/managedInstances/read'
          'Microsoft.Sql/managedInstances/write'
          'Microsoft.Sql/managedInstances/hybridCertificate/action'
          'Microsoft.Sql/managedInstances/databases/read'
          'Microsoft.Sql/managedInstances/databases/delete'
          'Microsoft.Sql/managedInstances/databases/write'
          'Microsoft.Sql/managedInstances/databases/completeRestore/action'
          'Microsoft.Sql/managedInstances/databases/readBackups/action'
          'Microsoft.Sql/managedInstances/databases/restoreDetails/read'
          'Microsoft.Sql/managedInstances/distributedAvailabilityGroups/read'
          'Microsoft.Sql/managedInstances/distributedAvailabilityGroups/write'
          'Microsoft.Sql/managedInstances/distributedAvailabilityGroups/delete'
          'Microsoft.Sql/managedInstances/distributedAvailabilityGroups/setRole/action'
          'Microsoft.Sql/managedInstances/endpointCertificates/read'
          'Microsoft.Sql/managedInstances/hybridLink/read'
          'Microsoft.Sql/managedInstances/hybridLink/write'
          'Microsoft.Sql/managedInstances/hybridLink/delete'
          'Microsoft.Sql/managedInstances/serverTrustCertificates/write'
          'Microsoft.Sql/managedInstances/serverTrustCertificates/delete'
          'Microsoft.Sql/managedInstances/serverTrustCertificates/read'
        ]
      }
    ]
  }
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(instance.id, principalId, useCustomRole ? 'custom' : sqlManagedInstanceContributor)
  scope: instance
  properties: {
    roleDefinitionId: useCustomRole ? linkRole.id : subscriptionResourceId('Microsoft.Authorization/roleDefinitions', sqlManagedInstanceContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
