// Package apireflection answers server reflection for the whole shop API.
//
// Behind Envoy, every grpc.reflection.* request goes to one server, which must
// describe all the shop's services, not only those of whichever backend a
// request happens to reach. This package loads the FileDescriptorSet that
// `make protos` writes (every shop proto and its imports, with source info, so
// clients show the proto comments) and builds reflection.ServerOptions from
// it.
package apireflection

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// DefaultDescriptorSet is where `make protos` writes the descriptor set,
// relative to the repository root.
const DefaultDescriptorSet = "protos/gen/shop_api.binpb"

// ownFiles describe the services this server itself registers besides
// reflection's subject: health and the two reflection versions. They are not
// in the descriptor set, so they come from the code linked into the binary.
var ownFiles = []protoreflect.FileDescriptor{
	healthpb.File_grpc_health_v1_health_proto,
	v1reflectiongrpc.File_grpc_reflection_v1_reflection_proto,
	v1alphareflectiongrpc.File_grpc_reflection_v1alpha_reflection_proto,
}

// API is the shop API as the descriptor set describes it.
type API struct {
	// Files holds every file of the set, with its source info, plus the
	// files of the health and reflection services.
	Files *protoregistry.Files
	// Extensions holds a dynamic type for every extension Files declare
	// (google.api.http, for example), for reflection's extension queries.
	Extensions *protoregistry.Types
	// APIServices are the full names of the services the set declares,
	// sorted: the shop's services.
	APIServices []string
	// Services are APIServices plus grpc.health.v1.Health and both
	// grpc.reflection services, sorted: what a "list" answers.
	Services []string
}

// Load reads the FileDescriptorSet at path. It fails, naming the file, when
// the file is missing, is not a descriptor set, is incomplete (a dependency
// is missing) or declares no service.
func Load(path string) (*API, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("descriptor set %s is missing; run `make protos` or set SHOP_DESCRIPTOR_SET: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read descriptor set: %w", err)
	}
	api, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("descriptor set %s: %w", path, err)
	}
	return api, nil
}

// Parse builds the API from a serialized FileDescriptorSet.
func Parse(data []byte) (*API, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a FileDescriptorSet: %w", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("build descriptors (was it written with --include_imports?): %w", err)
	}
	var apiServices []string
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			apiServices = append(apiServices, string(fd.Services().Get(i).FullName()))
		}
		return true
	})
	if len(apiServices) == 0 {
		return nil, errors.New("it declares no service; run `make protos`")
	}
	slices.Sort(apiServices)

	services := slices.Clone(apiServices)
	for _, fd := range ownFiles {
		if _, err := files.FindFileByPath(fd.Path()); err != nil {
			if err := files.RegisterFile(fd); err != nil {
				return nil, fmt.Errorf("add %s: %w", fd.Path(), err)
			}
		}
		for i := range fd.Services().Len() {
			services = append(services, string(fd.Services().Get(i).FullName()))
		}
	}
	slices.Sort(services)
	services = slices.Compact(services)

	extensions, err := extensionTypes(files)
	if err != nil {
		return nil, err
	}
	return &API{
		Files:       files,
		Extensions:  extensions,
		APIServices: apiServices,
		Services:    services,
	}, nil
}

// extensionTypes returns a dynamic type for every extension declared in
// files, at file level or inside a message. (dynamicpb.Types resolves them
// too but cannot range over a message's extensions, which reflection needs.)
func extensionTypes(files *protoregistry.Files) (*protoregistry.Types, error) {
	types := new(protoregistry.Types)
	var errs []error
	register := func(xds protoreflect.ExtensionDescriptors) {
		for i := range xds.Len() {
			if err := types.RegisterExtension(dynamicpb.NewExtensionType(xds.Get(i))); err != nil {
				errs = append(errs, fmt.Errorf("extension %s: %w", xds.Get(i).FullName(), err))
			}
		}
	}
	var walk func(mds protoreflect.MessageDescriptors)
	walk = func(mds protoreflect.MessageDescriptors) {
		for i := range mds.Len() {
			register(mds.Get(i).Extensions())
			walk(mds.Get(i).Messages())
		}
	}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		register(fd.Extensions())
		walk(fd.Messages())
		return true
	})
	return types, errors.Join(errs...)
}

// ServerOptions returns the options of a reflection server that describes
// the API: descriptors and extensions from the set, and its services listed.
func (a *API) ServerOptions() reflection.ServerOptions {
	return reflection.ServerOptions{
		Services:           serviceList(a.Services),
		DescriptorResolver: a.Files,
		ExtensionResolver:  a.Extensions,
	}
}

// HideHeader is the request metadata naming (comma-separated) services a
// reflection client is not shown. Envoy sets it on its public listener's
// reflection route to the services that have no public RPC (deploy/stack.toml),
// so public reflection lists only what the public listener serves; the
// internal listener sets nothing and sees every service.
const HideHeader = "x-shop-reflection-hide"

// OptionsWithout returns ServerOptions whose service list leaves out hidden.
// Their descriptors stay resolvable (another service's messages may use them).
func (a *API) OptionsWithout(hidden []string) reflection.ServerOptions {
	opts := a.ServerOptions()
	opts.Services = serviceList(slices.DeleteFunc(slices.Clone(a.Services), func(name string) bool {
		return slices.Contains(hidden, name)
	}))
	return opts
}

// hidden reads HideHeader from an incoming call's metadata.
func hidden(md metadata.MD) []string {
	var names []string
	for _, value := range md.Get(HideHeader) {
		for _, name := range strings.Split(value, ",") {
			if name = strings.TrimSpace(name); name != "" {
				names = append(names, name)
			}
		}
	}
	return names
}

// ReflectionServers returns grpc.reflection v1 and v1alpha servers for the
// API that leave out of their service list whatever a call's HideHeader names.
func (a *API) ReflectionServers() (v1reflectiongrpc.ServerReflectionServer, v1alphareflectiongrpc.ServerReflectionServer) {
	return hidingV1{api: a}, hidingV1Alpha{api: a}
}

type hidingV1 struct {
	v1reflectiongrpc.UnimplementedServerReflectionServer
	api *API
}

func (h hidingV1) ServerReflectionInfo(stream v1reflectiongrpc.ServerReflection_ServerReflectionInfoServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	return reflection.NewServerV1(h.api.OptionsWithout(hidden(md))).ServerReflectionInfo(stream)
}

type hidingV1Alpha struct {
	v1alphareflectiongrpc.UnimplementedServerReflectionServer
	api *API
}

func (h hidingV1Alpha) ServerReflectionInfo(stream v1alphareflectiongrpc.ServerReflection_ServerReflectionInfoServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	return reflection.NewServer(h.api.OptionsWithout(hidden(md))).ServerReflectionInfo(stream)
}

// serviceList is a reflection.ServiceInfoProvider for a fixed list of names.
// Reflection reads only the names, so the ServiceInfo values are empty.
type serviceList []string

var _ reflection.ServiceInfoProvider = serviceList(nil)

func (l serviceList) GetServiceInfo() map[string]grpc.ServiceInfo {
	m := make(map[string]grpc.ServiceInfo, len(l))
	for _, name := range l {
		m[name] = grpc.ServiceInfo{}
	}
	return m
}
