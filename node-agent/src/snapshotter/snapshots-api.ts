// containerd's snapshots service (containerd.services.snapshots.v1.Snapshots, with containerd.types.Mount
// and the protobuf well-known types it uses), written as a protobufjs JSON descriptor: only names,
// field numbers and types matter on the wire, and a descriptor in code needs no .proto file at run time.
import { fromJSON } from "@grpc/proto-loader";
import { loadPackageDefinition, type ServiceDefinition } from "@grpc/grpc-js";

const labels = (id: number) => ({ keyType: "string", type: "string", id });
const request = { snapshotter: { type: "string", id: 1 }, key: { type: "string", id: 2 } };
const createRequest = { fields: { ...request, parent: { type: "string", id: 3 }, labels: labels(4) } };
const mountsResponse = { fields: { mounts: { rule: "repeated", type: "containerd.types.Mount", id: 1 } } };

const descriptor = {
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Empty: { fields: {} },
            Timestamp: { fields: { seconds: { type: "int64", id: 1 }, nanos: { type: "int32", id: 2 } } },
            FieldMask: { fields: { paths: { rule: "repeated", type: "string", id: 1 } } },
          },
        },
      },
    },
    containerd: {
      nested: {
        types: {
          nested: {
            Mount: {
              fields: {
                type: { type: "string", id: 1 },
                source: { type: "string", id: 2 },
                target: { type: "string", id: 3 },
                options: { rule: "repeated", type: "string", id: 4 },
              },
            },
          },
        },
        services: {
          nested: {
            snapshots: {
              nested: {
                v1: {
                  nested: {
                    Snapshots: {
                      methods: {
                        Prepare: { requestType: "PrepareSnapshotRequest", responseType: "PrepareSnapshotResponse" },
                        View: { requestType: "ViewSnapshotRequest", responseType: "ViewSnapshotResponse" },
                        Mounts: { requestType: "MountsRequest", responseType: "MountsResponse" },
                        Commit: { requestType: "CommitSnapshotRequest", responseType: "google.protobuf.Empty" },
                        Remove: { requestType: "RemoveSnapshotRequest", responseType: "google.protobuf.Empty" },
                        Stat: { requestType: "StatSnapshotRequest", responseType: "StatSnapshotResponse" },
                        Update: { requestType: "UpdateSnapshotRequest", responseType: "UpdateSnapshotResponse" },
                        List: { requestType: "ListSnapshotsRequest", responseType: "ListSnapshotsResponse", responseStream: true },
                        Usage: { requestType: "UsageRequest", responseType: "UsageResponse" },
                        Cleanup: { requestType: "CleanupRequest", responseType: "google.protobuf.Empty" },
                      },
                    },
                    PrepareSnapshotRequest: createRequest,
                    PrepareSnapshotResponse: mountsResponse,
                    ViewSnapshotRequest: createRequest,
                    ViewSnapshotResponse: mountsResponse,
                    MountsRequest: { fields: request },
                    MountsResponse: mountsResponse,
                    RemoveSnapshotRequest: { fields: request },
                    CommitSnapshotRequest: {
                      fields: { snapshotter: { type: "string", id: 1 }, name: { type: "string", id: 2 }, key: { type: "string", id: 3 }, labels: labels(4) },
                    },
                    StatSnapshotRequest: { fields: request },
                    Kind: { values: { UNKNOWN: 0, VIEW: 1, ACTIVE: 2, COMMITTED: 3 } },
                    Info: {
                      fields: {
                        name: { type: "string", id: 1 },
                        parent: { type: "string", id: 2 },
                        kind: { type: "Kind", id: 3 },
                        created_at: { type: "google.protobuf.Timestamp", id: 4 },
                        updated_at: { type: "google.protobuf.Timestamp", id: 5 },
                        labels: labels(6),
                      },
                    },
                    StatSnapshotResponse: { fields: { info: { type: "Info", id: 1 } } },
                    UpdateSnapshotRequest: {
                      fields: { snapshotter: { type: "string", id: 1 }, info: { type: "Info", id: 2 }, update_mask: { type: "google.protobuf.FieldMask", id: 3 } },
                    },
                    UpdateSnapshotResponse: { fields: { info: { type: "Info", id: 1 } } },
                    ListSnapshotsRequest: { fields: { snapshotter: { type: "string", id: 1 }, filters: { rule: "repeated", type: "string", id: 2 } } },
                    ListSnapshotsResponse: { fields: { info: { rule: "repeated", type: "Info", id: 1 } } },
                    UsageRequest: { fields: request },
                    UsageResponse: { fields: { size: { type: "int64", id: 1 }, inodes: { type: "int64", id: 2 } } },
                    CleanupRequest: { fields: { snapshotter: { type: "string", id: 1 } } },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

// int64 as JS numbers (sizes stay far below 2^53); enums by name; absent fields with their defaults.
const definition = fromJSON(descriptor as Parameters<typeof fromJSON>[0], { keepCase: true, longs: Number, enums: String, defaults: true });

type Loaded = { containerd: { services: { snapshots: { v1: { Snapshots: { service: ServiceDefinition } } } } } };
const loaded = loadPackageDefinition(definition) as unknown as Loaded;

/** The service definition to add to a grpc-js Server; also builds clients in tests (makeGenericClientConstructor). */
export const SNAPSHOTS_SERVICE: ServiceDefinition = loaded.containerd.services.snapshots.v1.Snapshots.service;

export type Kind = "VIEW" | "ACTIVE" | "COMMITTED";

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export interface Info {
  name: string;
  parent: string;
  kind: Kind;
  created_at: Timestamp;
  updated_at: Timestamp;
  labels: Record<string, string>;
}
