"""The part of RunPod's GraphQL schema that the ``runpod`` SDK (1.12.x) and loraops use.

The simulator runs real GraphQL (``graphql-core``, a port of graphql-js) over this schema, so a query
that the real API would reject for its syntax (an unescaped quote pasted into one of the SDK's
f-strings), an unknown field or a wrong argument fails here too. Messages are graphql-core's:
graphql-js's wording, though names are quoted with ' instead of ". Type names follow RunPod's where
they are known; fields beyond the SDK's queries (``runtime.uptimeInSeconds``, ``machine.gpuTypeId``,
``lowestPrice.stockStatus``) are the ones RunPod's docs and common clients use.
"""

from __future__ import annotations

from functools import cache

from graphql import GraphQLSchema, build_schema

SDL = """
enum CloudTypeEnum { ALL SECURE COMMUNITY }
enum PodStatus { CREATED RUNNING RESTARTING EXITED PAUSED DEAD TERMINATED }
enum PodType { INTERRUPTABLE RESERVED BID BACKGROUND }

scalar Void

input GpuTypeFilter { id: String ids: [String] }

input GpuLowestPriceInput {
  gpuCount: Int
  secureCloud: Boolean
  minDownload: Int
  minMemoryInGb: Int
  minVcpuCount: Int
  countryCode: String
  dataCenterId: String
}

type LowestPrice {
  gpuName: String
  gpuTypeId: String
  minimumBidPrice: Float
  uninterruptablePrice: Float
  minMemory: Int
  minVcpu: Int
  stockStatus: String
  availableGpuCounts: [Int]
}

type GpuType {
  id: String
  displayName: String
  manufacturer: String
  memoryInGb: Int
  cudaCores: Int
  maxGpuCount: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  oneWeekPrice: Float
  communitySpotPrice: Float
  secureSpotPrice: Float
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type PodRuntimePorts { ip: String isIpPublic: Boolean privatePort: Int publicPort: Int type: String }
type PodRuntimeGpus { id: String gpuUtilPercent: Int memoryUtilPercent: Int }
type PodRuntimeContainer { cpuPercent: Int memoryPercent: Int }
type PodRuntime {
  uptimeInSeconds: Int
  ports: [PodRuntimePorts]
  gpus: [PodRuntimeGpus]
  container: PodRuntimeContainer
}

type PodMachineInfo {
  podHostId: String
  gpuDisplayName: String
  gpuTypeId: String
  location: String
  dataCenterId: String
}

type Pod {
  id: String
  name: String
  imageName: String
  env: [String]
  machineId: String
  machine: PodMachineInfo
  containerDiskInGb: Int
  costPerHr: Float
  adjustedCostPerHr: Float
  desiredStatus: PodStatus
  dockerArgs: String
  dockerId: String
  gpuCount: Int
  lastStatusChange: String
  memoryInGb: Int
  podType: PodType
  port: Int
  ports: String
  uptimeSeconds: Int
  vcpuCount: Int
  volumeInGb: Int
  volumeMountPath: String
  runtime: PodRuntime
}

type NetworkVolume { id: String name: String size: Int dataCenterId: String }

type User {
  id: String
  pubKey: String
  pods: [Pod]
  networkVolumes: [NetworkVolume]
}

input PodFilter { podId: String! }

input EnvironmentVariableInput { key: String! value: String }

input PodFindAndDeployOnDemandInput {
  name: String
  imageName: String
  cloudType: CloudTypeEnum
  startSsh: Boolean
  startJupyter: Boolean
  gpuTypeId: String
  gpuTypeIdList: [String]
  supportPublicIp: Boolean
  gpuCount: Int
  volumeInGb: Int
  containerDiskInGb: Int
  minVcpuCount: Int
  minMemoryInGb: Int
  allowedCudaVersions: [String]
  dataCenterId: String
  countryCode: String
  dockerArgs: String
  ports: String
  volumeMountPath: String
  env: [EnvironmentVariableInput]
  templateId: String
  networkVolumeId: String
  minDownload: Int
  minUpload: Int
}

input PodStopInput { podId: String! incrementVersion: Boolean }
input PodResumeInput { podId: String! gpuCount: Int }
input PodTerminateInput { podId: String! }

type Query {
  gpuTypes(input: GpuTypeFilter): [GpuType]
  pod(input: PodFilter): Pod
  myself: User
}

type Mutation {
  podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput): Pod
  podStop(input: PodStopInput!): Pod
  podResume(input: PodResumeInput!): Pod
  podTerminate(input: PodTerminateInput!): Void
}
"""


@cache
def schema() -> GraphQLSchema:
    """The schema, built once (lazily: nothing happens at import time)."""
    return build_schema(SDL)
