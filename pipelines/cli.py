def main():
    print("cvat-kfp")
