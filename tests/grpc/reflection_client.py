"""A gRPC client that is not ours: Python grpcio learns repdist's API from server reflection alone
(no .proto file, no generated stubs), calls it, and prints what it got as one JSON object.

usage: REPDIST_TEST_API_KEY=rd_... reflection_client.py HOST:PORT DELIVERY_ID SUBSCRIBER_ID
(the API key goes in `authorization` metadata; health and reflection need none)
"""
import json
import os
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def main():
    address, delivery_id, subscriber_id = sys.argv[1:4]
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = DescriptorPool(database)

    credentials = (("authorization", "Bearer " + os.environ["REPDIST_TEST_API_KEY"]),)

    def call(service_name, method_name, fields, metadata=credentials):
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        stub = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            response = stub(json_format.ParseDict(fields, request_class()), timeout=10, metadata=metadata)
            return {"ok": json_format.MessageToDict(response, preserving_proto_field_name=True)}
        except grpc.RpcError as error:
            trailers = {key: value for key, value in (error.trailing_metadata() or ())}
            return {"error": {"code": error.code().name, "details": error.details(), "trailers": trailers}}

    out = {
        "services": sorted(database.get_services()),
        "delivery_status": call("repdist.reporting.v1.ReportingStream", "GetDeliveryStatus", {"delivery_id": delivery_id}),
        "no_credential": call("repdist.reporting.v1.ReportingStream", "GetDeliveryStatus", {"delivery_id": delivery_id}, metadata=()),
        "unknown_delivery": call("repdist.reporting.v1.ReportingStream", "GetDeliveryStatus", {"delivery_id": "no-such-delivery"}),
        "subscriptions": call("repdist.reporting.v1.DistributionQuery", "ListSubscriptions", {"subscriber_id": subscriber_id}),
        "bad_subscription": call(
            "repdist.reporting.v1.ReportingStream",
            "ManageSubscription",
            {"action": "CREATE", "subscription_json": json.dumps({"subscriber_id": subscriber_id, "report_types": ["RISK_REPORT"],
                                                                   "delivery_preferences": {"channels": ["EMAIL"],
                                                                                            "notification_settings": {"email": {"to": ["pm@example.com"]}}}})},
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
