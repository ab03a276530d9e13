// The part of the Kubernetes CRI (runtime.v1.ImageService) that `skiff pull` uses, written as a
// protobufjs JSON descriptor (field numbers as in k8s.io/cri-api's api.proto). Pulling through CRI,
// not through containerd's own client, is what makes containerd label each layer with the image
// reference and digests that a remote snapshotter needs to serve it lazily.
import { fromJSON } from "@grpc/proto-loader";
import { credentials, loadPackageDefinition, Metadata, type Client, type ServiceError } from "@grpc/grpc-js";

const descriptor = {
  nested: {
    runtime: {
      nested: {
        v1: {
          nested: {
            ImageService: { methods: { PullImage: { requestType: "PullImageRequest", responseType: "PullImageResponse" } } },
            ImageSpec: { fields: { image: { type: "string", id: 1 }, annotations: { keyType: "string", type: "string", id: 2 } } },
            AuthConfig: {
              fields: {
                username: { type: "string", id: 1 },
                password: { type: "string", id: 2 },
                auth: { type: "string", id: 3 },
                server_address: { type: "string", id: 4 },
                identity_token: { type: "string", id: 5 },
                registry_token: { type: "string", id: 6 },
              },
            },
            PullImageRequest: { fields: { image: { type: "ImageSpec", id: 1 }, auth: { type: "AuthConfig", id: 2 } } },
            PullImageResponse: { fields: { image_ref: { type: "string", id: 1 } } },
          },
        },
      },
    },
  },
};

type ImageServiceClient = Client & {
  PullImage(req: object, meta: Metadata, options: { deadline: number }, cb: (err: ServiceError | null, res: { image_ref: string }) => void): void;
};
type Loaded = { runtime: { v1: { ImageService: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => ImageServiceClient } } };

export interface CriPullOptions {
  /** containerd's socket (CRI is served on its main socket). */
  address: string;
  /** `user:password` for the registry, when it needs credentials. */
  auth?: { username: string; password: string };
  timeoutMs: number;
}

/** Pulls `image` through CRI's ImageService; resolves to the image ID containerd reports. */
export function criPullImage(image: string, o: CriPullOptions): Promise<string> {
  const definition = fromJSON(descriptor as Parameters<typeof fromJSON>[0], { keepCase: true, defaults: true });
  const { runtime } = loadPackageDefinition(definition) as unknown as Loaded;
  const client = new runtime.v1.ImageService(`unix://${o.address}`, credentials.createInsecure());
  return new Promise<string>((resolve, reject) => {
    client.PullImage({ image: { image }, auth: o.auth }, new Metadata(), { deadline: Date.now() + o.timeoutMs }, (err, res) => {
      client.close();
      if (err) reject(new Error((err.details || err.message).replace(/\s*Resolution note:[\s\S]*$/, "")));
      else resolve(res.image_ref);
    });
  });
}
