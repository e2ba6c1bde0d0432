// How the router reaches the Kubernetes API server: in a pod, through the
// service account (token and CA under /var/run/secrets/kubernetes.io/
// serviceaccount, server from KUBERNETES_SERVICE_HOST/PORT); elsewhere through
// a kubeconfig (--kubeconfig, else $KUBECONFIG, else ~/.kube/config).
// @kubernetes/client-node reads the kubeconfig and applies its credentials
// (tokens, rotating token files, client certificates, exec plugins, proxies);
// the requests themselves are plain node:http(s) GETs, because the list-and-
// watch reader (listWatch.ts) bounds what it buffers and the library's Watch
// does not (it splits lines with node:readline, whatever their length).
import type { IncomingMessage, RequestOptions } from "node:http";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** Where a pod finds its service account (the Kubernetes docs' fixed path). */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubeClientOptions {
  /** A kubeconfig file (--kubeconfig); else $KUBECONFIG, the in-cluster service account, ~/.kube/config. */
  kubeconfig?: string;
  /** Root the service account path is read under (tests); default "" (the real path). */
  serviceAccountRoot?: string;
  env?: NodeJS.ProcessEnv;
}

/** One GET to the API server; the caller reads (and must consume or destroy) the response. */
export interface KubeClient {
  /** The API server's URL, for logs. */
  readonly server: string;
  /** Where the credentials came from: a kubeconfig path or "in-cluster". */
  readonly source: string;
  /** The namespace the kubeconfig's context (or the pod's service account) names, if any. */
  readonly namespace: string | undefined;
  get(pathAndQuery: string, signal: AbortSignal): Promise<IncomingMessage>;
}

export class KubeConfigError extends Error {}

/** Loads the configuration, as kubectl would pick it (with --kubeconfig first). */
export async function kubeClient(opts: KubeClientOptions = {}): Promise<KubeClient> {
  const env = opts.env ?? process.env;
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kc = new KubeConfig();
  let source: string;
  const fromEnv = env.KUBECONFIG?.split(process.platform === "win32" ? ";" : ":").filter((f) => f !== "")[0];
  const file = opts.kubeconfig ?? fromEnv;
  try {
    if (file !== undefined) {
      if (!existsSync(file)) throw new KubeConfigError(`no such kubeconfig file ${file}`);
      kc.loadFromFile(file);
      source = file;
    } else if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT) {
      const root = opts.serviceAccountRoot ?? "";
      if (!existsSync(join(root + SERVICE_ACCOUNT_DIR, "token"))) {
        throw new KubeConfigError(`in a pod (KUBERNETES_SERVICE_HOST is set) but ${SERVICE_ACCOUNT_DIR}/token is missing: mount the service account token`);
      }
      kc.loadFromCluster(root);
      source = "in-cluster";
    } else {
      const home = join(env.HOME ?? homedir(), ".kube", "config");
      if (!existsSync(home)) {
        throw new KubeConfigError("no Kubernetes configuration: give --kubeconfig or KUBECONFIG, or run in a pod with a service account");
      }
      kc.loadFromFile(home);
      source = home;
    }
  } catch (err) {
    if (err instanceof KubeConfigError) throw err;
    throw new KubeConfigError(`cannot read the Kubernetes configuration${file ? ` ${file}` : ""}: ${(err as Error).message}`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new KubeConfigError(`${source}: the current context names no cluster`);
  const context = kc.getContextObject(kc.getCurrentContext());
  const server = cluster.server.replace(/\/+$/, "");
  return {
    server,
    source,
    namespace: context?.namespace?.trim() || undefined,
    async get(pathAndQuery, signal) {
      // Credentials are applied per request: token files rotate (bound service account tokens last an hour).
      const options: RequestOptions & { headers: Record<string, string> } = { method: "GET", headers: { accept: "application/json" }, signal };
      await kc.applyToHTTPSOptions(options);
      const url = new URL(server + pathAndQuery);
      const send = url.protocol === "https:" ? httpsRequest : httpRequest;
      return new Promise<IncomingMessage>((resolve, reject) => {
        const req = send(url, options, resolve);
        req.once("error", reject);
        req.end();
      });
    },
  };
}
