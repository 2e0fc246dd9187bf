CREATE TABLE "example_counters" (
	"user_id" text NOT NULL,
	"name" text NOT NULL,
	"count" integer NOT NULL,
	"updated_ts" bigint NOT NULL,
	CONSTRAINT "example_counters_user_id_name_pk" PRIMARY KEY("user_id","name")
);
