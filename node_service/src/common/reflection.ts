// What server reflection serves: the whole shop API from the descriptor set
// `make protos` writes, plus grpc.health.v1.
//
// @grpc/reflection indexes the serialized FileDescriptorProtos it finds in a
// package definition. Handing it @grpc/proto-loader's output does not work
// (grpc/grpc-node#2958, #3018): proto-loader re-creates the descriptors
// through protobufjs, which drops the well-known types (grpcurl then fails
// with `"*.google.protobuf.Timestamp" not found`) and misnames map entries and
// files. So the descriptor set's files are passed through byte for byte, and
// the health file that protobufjs builds is repaired before it is added.
import { loadSync, type MessageTypeDefinition, type PackageDefinition } from "@grpc/proto-loader";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { protoPath as healthProtoPath } from "grpc-health-check";
import descriptor from "protobufjs/ext/descriptor/index.js";


/** The serialized FileDescriptorProtos of a FileDescriptorSet, unchanged. */
export function splitDescriptorSet(descriptorSet: Uint8Array): Buffer[] {
  const files: Buffer[] = [];
  const reader = new BinaryReader(descriptorSet);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) {
      files.push(Buffer.from(reader.bytes()));
    } else {
      reader.skip(wireType);
    }
  }
  return files;
}

function pascalCase(fieldName: string): string {
  return fieldName
    .split("_")
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join("");
}

// The parts of a decoded FileDescriptorProto that the repair touches.
interface FileShape {
  name: string;
  package: string;
  messageType: {
    name: string;
    field: { name: string; typeName?: string }[];
    nestedType: { name: string; options?: { mapEntry?: boolean } }[];
  }[];
}

/**
 * grpc/health/v1/health.proto as protoc would describe it: protobufjs names
 * the file grpc_health_v1.proto and a map field's entry type after the field
 * (`Statuses`) instead of `StatusesEntry`, which grpcurl rejects. It is
 * decoded and re-encoded with protobufjs's own descriptor types (as
 * @grpc/reflection does), which keep proto2 field presence; the ts-proto
 * codec would drop explicit zeros such as the UNKNOWN enum value's number.
 */
export function healthFileDescriptor(): Buffer {
  const definition = loadSync(healthProtoPath);
  const message = definition["grpc.health.v1.HealthCheckRequest"] as MessageTypeDefinition | undefined;
  const pkg = "grpc.health.v1";
  const raw = message?.fileDescriptorProtos.find(
    (bytes) => (descriptor.FileDescriptorProto.decode(bytes) as unknown as FileShape).package === pkg,
  );
  if (raw === undefined) {
    throw new Error(`no ${pkg} file descriptor in ${healthProtoPath}`);
  }
  const decoded = descriptor.FileDescriptorProto.decode(raw);
  const file = decoded as unknown as FileShape;
  file.name = "grpc/health/v1/health.proto";
  for (const type of file.messageType) {
    for (const field of type.field) {
      const entry = type.nestedType.find((nested) => nested.options?.mapEntry === true && nested.name === field.typeName);
      if (entry !== undefined) {
        entry.name = `${pascalCase(field.name)}Entry`;
        field.typeName = `.${pkg}.${type.name}.${entry.name}`;
      }
    }
  }
  return Buffer.from(descriptor.FileDescriptorProto.encode(decoded).finish());
}

/** A package definition that @grpc/reflection serves faithfully. */
export function reflectionPackage(descriptorSet: Uint8Array): PackageDefinition {
  const entry = {
    format: "Protocol Buffer 3 FileDescriptorProto",
    type: {},
    fileDescriptorProtos: [...splitDescriptorSet(descriptorSet), healthFileDescriptor()],
  } as unknown as MessageTypeDefinition;
  return { "shop.api": entry };
}
